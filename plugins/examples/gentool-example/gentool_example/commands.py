"""A command: ``gentool quadratic-betas``. Cheap to import: torch is imported when it runs."""

import typer


def quadratic_betas(
    timesteps: int = typer.Option(10, "--timesteps", help="Number of steps T."),
    beta_start: float = typer.Option(1e-4, "--beta-start", help="The first beta."),
    beta_end: float = typer.Option(0.02, "--beta-end", help="The last beta."),
) -> None:
    """Print the quadratic schedule's betas, one per line."""
    from gentool_example.quadratic import quadratic  # imports torch

    for beta in quadratic(timesteps=timesteps, beta_start=beta_start, beta_end=beta_end).tolist():
        print(f"{beta:.6g}")
