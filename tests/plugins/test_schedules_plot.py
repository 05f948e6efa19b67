"""The ``schedules`` plot: both panel titles lie within the figure."""

from __future__ import annotations

from matplotlib.figure import Figure

from gentool.plugins import registry

from gentool_tasks.schedules_plot import plot_curves, schedule_curves


def test_titles_fit_in_the_figure(tmp_path, monkeypatch):
    saved = []
    savefig = Figure.savefig

    def keep(fig, *args, **kwargs):
        saved.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    curves = schedule_curves(registry(), ["linear", "cosine"], 100)
    plot_curves(curves, tmp_path / "schedules.png")
    (fig,) = saved
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.title.get_window_extent(renderer)
        # the right-hand title was cut off at "...(dashe"
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1, (ax.get_title(), box, fig.bbox)
