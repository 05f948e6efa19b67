"""Rectified flow and EDM as a plugin package: processes, objectives (with their parameterisations), samplers."""

import gentool


@gentool.hookimpl
def gentool_register_processes(register):
    from gentool_acceptance.edm import edm_sigma
    from gentool_acceptance.rectified_flow import linear_path

    register("rf_path", linear_path)
    register("edm_sigma", edm_sigma)


@gentool.hookimpl
def gentool_register_objectives(register):
    from gentool_acceptance.edm import edm_loss
    from gentool_acceptance.rectified_flow import rf_velocity

    register("rf_velocity", rf_velocity)
    register("edm_loss", edm_loss)


@gentool.hookimpl
def gentool_register_samplers(register):
    from gentool_acceptance.edm import edm_heun
    from gentool_acceptance.rectified_flow import rf_euler

    register("rf_euler", rf_euler)
    register("edm_heun", edm_heun)
