"""Recipe validation: every error names the file, the key path, the value and the choices."""

import pytest

from gentool.recipe import RecipeError, load_recipe, parse_override


def write(tmp_path, text, name="r.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


BASE = """
[data]
name = "toy"
[denoiser]
name = "unet"
in_channels = 1
image_size = 8
channels = 32
channel_mult = [1, 2]
attention_resolutions = [4]
"""


def test_defaults_come_from_the_factory_signature(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    assert r.run.name == "r"  # the file stem
    assert r.schedule.name == "linear" and r.schedule.options == {"timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                                                                 "zero_terminal_snr": False}
    assert r.denoiser.options["num_res_blocks"] == 2 and r.denoiser.options["dropout"] == 0.1
    assert r.sampler.name == "ancestral" and r.sampler.options["variance"] == "beta"


def test_misspelt_key_names_the_path_and_the_closest_key(tmp_path):
    path = write(tmp_path, BASE + "[train]\nstpes = 10\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert str(path) in msg and "train.stpes" in msg and "'steps'" in msg
    assert info.value.key == "train.stpes" and "steps" in info.value.choices


def test_unknown_component_name_lists_close_names(tmp_path):
    text = BASE.replace('name = "toy"', 'name = "toy"') + '[schedule]\nname = "cosin"\n'
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    assert info.value.key == "schedule.name" and "'cosine'" in str(info.value)


def test_wrong_type_and_bad_choice(tmp_path):
    with pytest.raises(RecipeError, match=r"train\.batch_size: 'a lot' is not valid: expected int"):
        load_recipe(write(tmp_path, BASE + '[train]\nbatch_size = "a lot"\n'))
    with pytest.raises(RecipeError, match=r"sampler\.variance: 'big' is not valid: expected one of 'beta', 'beta_tilde'"):
        load_recipe(write(tmp_path, BASE + '[sampler]\nvariance = "big"\n'))
    with pytest.raises(RecipeError, match=r"train\.loss \(now objective\.loss\): 'l3' is not valid"):
        load_recipe(write(tmp_path, BASE + '[train]\nloss = "l3"\n'))
    with pytest.raises(RecipeError, match=r"objective\.loss: 'l3' is not valid"):
        load_recipe(write(tmp_path, BASE + '[objective]\nloss = "l3"\n'))


def test_unknown_table_and_missing_required_option(tmp_path):
    with pytest.raises(RecipeError, match=r"trian: unknown table 'trian'; did you mean 'train'"):
        load_recipe(write(tmp_path, BASE + "[trian]\nsteps = 1\n"))
    with pytest.raises(RecipeError, match=r"data\.root: missing required option 'root'"):
        load_recipe(write(tmp_path, BASE.replace('name = "toy"', 'name = "image_folder"')))
    with pytest.raises(RecipeError, match=r"denoiser: missing table \[denoiser\]"):
        load_recipe(write(tmp_path, '[data]\nname = "toy"\n'))


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[train\nsteps = 1\n")
    with pytest.raises(RecipeError, match="not valid TOML") as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_overrides_parse_as_toml_and_are_validated(tmp_path):
    path = write(tmp_path, BASE + "[[tasks]]\nname = \"sample\"\n")
    r = load_recipe(path, overrides=["train.steps=100", "schedule.name=cosine", "tasks.0.n=4", "denoiser.channel_mult=[1,1]"])
    assert r.train.steps == 100 and r.schedule.name == "cosine" and r.tasks[0].options["n"] == 4
    assert r.denoiser.options["channel_mult"] == [1, 1]
    with pytest.raises(RecipeError, match=r"train\.stpes"):
        load_recipe(path, overrides=["train.stpes=3"])
    with pytest.raises(RecipeError, match="KEY.PATH=VALUE"):
        load_recipe(path, overrides=["train.steps"])
    assert parse_override("run.name=my run") == (["run", "name"], "my run")


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe(write(tmp_path, BASE + '[sampler]\nsteps = 20\nguidance = 1.5\n'))
    again = load_recipe(write(tmp_path, r.dumps(), "resolved.toml"))
    assert again.to_dict() == r.to_dict()
    assert again.sampler.steps == 20 and again.sampler.guidance == 1.5


def test_training_without_data_is_refused(tmp_path):
    text = BASE.replace('[data]\nname = "toy"\n', "")
    with pytest.raises(RecipeError, match=r"data: training \(train.steps > 0\) needs a \[data\] table"):
        load_recipe(write(tmp_path, text))
    assert load_recipe(write(tmp_path, text + "[train]\nsteps = 0\n")).data is None


def test_a_wrong_value_for_a_list_option_shows_the_toml_syntax(tmp_path):
    # --set denoiser.channel_mult=1,2 is the string "1,2": the message shows how a list is written
    with pytest.raises(RecipeError, match=r"denoiser\.channel_mult: '1,2' is not valid: expected list of int, e\.g\. \[1, 2\]"):
        load_recipe(write(tmp_path, BASE), overrides=["denoiser.channel_mult=1,2"])
    with pytest.raises(RecipeError, match=r"train\.batch_size: 'a lot' is not valid: expected int$"):
        load_recipe(write(tmp_path, BASE + '[train]\nbatch_size = "a lot"\n'))  # no example for a non-list option
