"""The figure stage (wsss_lib/stages/figures.py): which images the figures draw."""

import pandas as pd
import pytest

from wsss_lib.stages.figures import figure_rows


def test_figure_rows_take_the_first_masked_images_or_the_listed_ids(tmp_path):
    table = pd.DataFrame({"id": ["a", "b", "c", "d"], "image": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
                          "mask": ["", "b.png", "c.png", "d.png"], "bird": [1, 0, 1, 1]})
    path = tmp_path / "train.csv"
    table.to_csv(path, index=False)
    assert figure_rows(str(path), {"ids": [], "n_images": 2})["id"].tolist() == ["b", "c"]
    assert figure_rows(str(path), {"ids": ["d", "a"], "n_images": 2})["id"].tolist() == ["d", "a"]
    with pytest.raises(ValueError, match=r"figures.ids \['zz'\] are not in .*train.csv"):
        figure_rows(str(path), {"ids": ["zz"], "n_images": 2})
