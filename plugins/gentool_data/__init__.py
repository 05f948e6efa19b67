"""Built-in data sources: MNIST, Fashion-MNIST, CIFAR-10, image folders,
Hugging Face data sets and a tiny synthetic set."""

import gentool

from gentool_data.cifar import cifar10
from gentool_data.fashion_mnist import fashion_mnist
from gentool_data.hf_dataset import hf_dataset
from gentool_data.image_folder import image_folder
from gentool_data.mnist import mnist
from gentool_data.toy import toy


@gentool.hookimpl
def gentool_register_data_sources(register):
    register("fashion_mnist", fashion_mnist)
    register("mnist", mnist)
    register("cifar10", cifar10)
    register("image_folder", image_folder)
    register("hf_dataset", hf_dataset)
    register("toy", toy)
