"""The ``animate`` task: the forward process in closed form, the reverse trajectory, GIF frame counts."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gentool.testing import check_task

from gentool_tasks.animate import animate, forward_frames, positions, reverse_frames, save_gif


pytestmark = pytest.mark.usefixtures("one_thread")
# task_run (conftest): an untrained class-conditional tiny run (T = 20) with a perturbed output layer


def test_positions_are_even_distinct_and_include_both_ends():
    assert positions(5, 50) == [0, 13, 25, 38, 50]  # 12.5 and 37.5 round up
    assert positions(2, 1) == [0, 1]
    for total in range(1, 30):
        for frames in range(2, total + 2):
            p = positions(frames, total)
            assert len(set(p)) == frames and p[0] == 0 and p[-1] == total
    with pytest.raises(ValueError, match="at most"):
        positions(12, 10)
    with pytest.raises(ValueError, match="at least 2"):
        positions(1, 10)


def test_forward_frames_match_the_closed_form(task_run):
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    noise = torch.randn(3, 1, 8, 8)
    frames, captions = forward_frames(task_run.diffusion, x0, 5, noise)
    assert captions == ["t = 0/20", "t = 5/20", "t = 10/20", "t = 15/20", "t = 20/20"]
    counts = [0, 5, 10, 15, 20]
    abar = torch.cumprod(1 - torch.linspace(1e-3, 0.3, 20, dtype=torch.float64), 0)  # the tiny schedule
    assert torch.equal(frames[0], x0)
    for frame, k in zip(frames[1:], counts[1:]):
        want = abar[k - 1].sqrt() * x0.double() + (1 - abar[k - 1]).sqrt() * noise.double()
        assert torch.allclose(frame.double(), want, atol=1e-6)


def test_reverse_trajectory_runs_from_x_T_to_the_sample(task_run):
    x_T = task_run.noise(4, task_run.generator(5))
    shots, order, total = reverse_frames(task_run, x_T, 4, generator=task_run.generator(6))
    assert total == 20 and order == [0, 7, 13, 20] and shots.shape == (4, 4, 1, 8, 8)
    assert torch.equal(shots[0], x_T)
    assert torch.equal(shots[-1], task_run.sample(x_T=x_T, generator=task_run.generator(6), progress=False))


def test_gif_keeps_identical_frames_apart(tmp_path):
    # Pillow merges identical consecutive frames; the captions keep every requested frame
    same = [torch.zeros(4, 1, 8, 8)] * 6
    path = save_gif(same, [f"step {k}" for k in range(6)], tmp_path / "same.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 6


@pytest.mark.parametrize("frames,steps,show", [(5, None, "x"), (3, 6, "x0")])
def test_task_gifs_have_one_frame_per_requested_step(task_run, tmp_path, frames, steps, show):
    extra = {} if steps is None else {"steps": steps}  # recipes have no None: leave it out
    result = check_task(animate, task_run, out_dir=tmp_path, n=4, frames=frames, show=show, indices=[0, 1], **extra)
    assert {f.name for f in result.files} == {"reverse.png", "reverse.gif", "forward.png", "forward.gif"}
    for name in ("reverse.gif", "forward.gif"):
        with Image.open(tmp_path / name) as gif:
            assert gif.format == "GIF" and gif.n_frames == frames
    # 4 (2) rows of `frames` 8 px cells with 2 px padding, enlarged k times so that the labels fit, under a label band
    for name, rows in (("reverse.png", 4), ("forward.png", 2)):
        with Image.open(tmp_path / name) as strip:
            k = strip.size[0] // (2 + 10 * frames)
            assert k >= 1 and strip.size[0] == k * (2 + 10 * frames)
            assert k * (2 + 10 * rows) < strip.size[1] < k * (2 + 10 * rows) + 20


def test_strip_labels_sit_above_their_columns_and_leave_the_grid_as_it_was(tmp_path):
    import torch
    from PIL import Image

    from gentool.images import save_grid
    from gentool_tasks.animate import save_strip

    frames = torch.rand(3, 2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = save_grid(frames.transpose(0, 1).flatten(0, 1), tmp_path / "plain.png", nrow=3)
    labelled = save_strip(frames, tmp_path / "labelled.png", ["t = 0", "t = 500", "t = 1000"])
    with Image.open(plain) as a, Image.open(labelled) as b:
        k = b.width // a.width
        band = b.height - k * a.height
        assert b.width == k * a.width and 8 <= band <= 20
        assert b.crop((0, band, b.width, b.height)).tobytes() == a.resize(b.crop((0, band, b.width, b.height)).size,
                                                                          Image.NEAREST).tobytes()
        header = b.crop((0, 0, b.width, band)).convert("L")
        thirds = [header.crop((i * b.width // 3, 0, (i + 1) * b.width // 3, band)) for i in range(3)]
        assert all(third.getextrema()[1] > 200 for third in thirds)  # white text over each column


def test_too_many_frames_is_a_clear_error(task_run, tmp_path):
    with pytest.raises(ValueError, match="at most 6"):
        animate(task_run, tmp_path, n=1, frames=7, steps=5, forward=False)
