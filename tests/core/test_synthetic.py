"""The synthetic-data spec every built-in generator declares: checked parameters, one cache folder per set."""

import re

import pytest

from mnet_tasks.data.synthetic import Parameter, SyntheticData

SPEC = SyntheticData(
    "synthetic_test",
    3,
    {"images": Parameter(10, 1), "share": Parameter(0.5, 0.0, 1.0)},
    write=lambda folder, params: (folder / "n.txt").write_text(str(params["images"])),
)


def test_parameters_fill_defaults_add_the_version_and_cast_to_the_default_type():
    assert SPEC.parameters() == {"generator_version": 3, "images": 10, "share": 0.5}
    assert SPEC.parameters(images=4.0, share=1) == {"generator_version": 3, "images": 4, "share": 1.0}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"image": 3}, "data.synthetic.image is not a parameter (choose from images, share)"),
        ({"images": 0}, "data.synthetic.images must be at least 1, got 0"),
        ({"share": 1.5}, "data.synthetic.share must be 0.0 to 1.0, got 1.5"),
        ({"images": 2.5}, "data.synthetic.images must be int, got 2.5"),
        ({"images": True}, "data.synthetic.images must be int, got True"),
    ],
)
def test_a_bad_parameter_is_refused_naming_its_key(given, message):
    with pytest.raises(ValueError, match=f"^{re.escape(f'synthetic_test: {message}')}$"):
        SPEC.parameters(**given)


def test_each_parameter_set_has_its_own_folder_written_once(tmp_path):
    assert SPEC.folder_name() == SPEC.folder_name(images=10) != SPEC.folder_name(images=11)
    root = SPEC.generate(tmp_path / SPEC.folder_name(images=7), images=7)
    assert (root / "n.txt").read_text() == "7"
    (root / "n.txt").write_text("kept")
    assert SPEC.generate(root, images=7) == root and (root / "n.txt").read_text() == "kept"
    with pytest.raises(ValueError, match="generated with other parameters"):
        SPEC.generate(root, images=8)
