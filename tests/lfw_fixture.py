"""A miniature LFW tree with official-format protocol files, generated for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PEOPLE = [  # two folds of people, as in people.txt
    [("Alice_Able", 3), ("Bob_Baker", 2), ("Carol_Cole", 1), ("Dan_Dale", 2)],
    [("Eve_Evans", 3), ("Frank_Fox", 2), ("Gina_Gale", 1), ("Hank_Hill", 2)],
]
PAIRS_TXT = """2\t2
Alice_Able\t1\t2
Bob_Baker\t1\t2
Alice_Able\t3\tCarol_Cole\t1
Dan_Dale\t1\tBob_Baker\t2
Eve_Evans\t1\t3
Hank_Hill\t1\t2
Frank_Fox\t1\tGina_Gale\t1
Eve_Evans\t2\tHank_Hill\t2
"""


#: PEOPLE with four more people of three images in fold 1 (enough to hold some out for validation).
MORE_PEOPLE = [PEOPLE[0], PEOPLE[1] + [("Ivy_Ice", 3), ("Jon_Jay", 3), ("Kim_Key", 3), ("Lou_Lee", 3)]]


def people_txt(people=PEOPLE) -> str:
    out = [str(len(people))]
    for fold in people:
        out.append(str(len(fold)))
        out += [f"{n}\t{c}" for n, c in fold]
    return "\n".join(out) + "\n"


def make_mini_lfw(root: Path, size: int = 40, people=PEOPLE) -> Path:
    """root/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg plus pairs.txt and people.txt; returns root."""
    rng = np.random.default_rng(0)
    tree = root / "lfw-deepfunneled"
    for fold in people:
        for name, count in fold:
            (tree / name).mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 255, 3)
            for i in range(1, count + 1):
                arr = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(tree / name / f"{name}_{i:04d}.jpg", quality=95)
    (root / "pairs.txt").write_text(PAIRS_TXT)
    (root / "people.txt").write_text(people_txt(people))
    return root
