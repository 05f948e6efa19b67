"""The quickstart's grid and the numbers stated beside it come from a run of today's main recipe.

``docs/images/fashion_mnist_grid.json`` records the run the picture was copied
from: the recipe's values (a hash of the parsed TOML, so comments do not
count), its final loss and wall time. A change to ``recipes/fashion_mnist.toml``
fails here until the picture is made again and the record updated; the
README's and the quickstart's figures must be the record's.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "images" / "fashion_mnist_grid.json"


def recipe_hash(path: Path) -> str:
    values = tomllib.loads(path.read_text(encoding="utf-8"))
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def test_the_grid_was_made_by_the_recipe_as_it_is():
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    assert (ROOT / record["figure"]).is_file()
    assert recipe_hash(ROOT / record["recipe"]) == record["recipe_sha256"], (
        f"{record['recipe']} changed since {record['figure']} was made: run `{record['made_by']}`, copy its "
        f"sample/grid.png there, and write the new hash, loss and times into {RECORD.relative_to(ROOT)} "
        "and the README's and quickstart's sentences")


def test_the_stated_numbers_are_the_record_s():
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    quickstart = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart, readme = " ".join(quickstart.split()), " ".join(readme.split())
    assert f"final logged loss {record['final_loss']:.3f}" in quickstart
    assert f"{record['wall_s']:.0f} s from the command to the last file" in quickstart
    minutes, seconds = divmod(round(record["wall_s"]), 60)
    assert f"{minutes} min {seconds} s on 2 idle cores" in readme
    # issue 29: the first preview grid within the first 2 minutes of training
    assert record["first_preview_s"] <= 120
