"""The paper's cost figures (Tables 2, 4-7), counted the paper's way."""

import pytest

from mnet_tasks import MobileNetV1
from mnet_tasks.cost import format_cost, profile_model

# (model kwargs, input size, paper MAdds in millions, paper params in millions), 1000 classes.
PAPER_COSTS = [
    (dict(alpha=1.0), 224, 569, 4.2),
    (dict(alpha=0.75), 224, 325, 2.6),
    (dict(alpha=0.5), 224, 149, 1.3),
    (dict(alpha=0.25), 224, 41, 0.5),
    (dict(alpha=1.0), 192, 418, 4.2),
    (dict(alpha=1.0), 160, 290, 4.2),
    (dict(alpha=1.0), 128, 186, 4.2),
    (dict(alpha=0.5), 160, 76, 1.32),
    (dict(separable=False), 224, 4866, 29.3),
    (dict(shallow=True), 224, 307, 2.9),
]


@pytest.mark.parametrize(("kwargs", "size", "madds_m", "params_m"), PAPER_COSTS)
def test_cost_matches_the_paper(kwargs, size, madds_m, params_m):
    cost = profile_model(MobileNetV1(num_classes=1000, **kwargs), size)
    assert cost.madds / 1e6 == pytest.approx(madds_m, rel=0.01)
    params_tolerance = max(0.05, 0.02 * params_m)
    assert abs(cost.params / 1e6 - params_m) <= params_tolerance


def test_table_2_breakdown_by_layer_type():
    cost = profile_model(MobileNetV1(), 224)
    share = {kind: 100 * madds / cost.madds for kind, madds in cost.madds_by_layer_type.items()}
    assert share["1x1 conv"] == pytest.approx(94.86, abs=0.05)
    assert share["depthwise conv"] == pytest.approx(3.06, abs=0.05)
    assert share["fully connected"] == pytest.approx(0.18, abs=0.01)
    assert sum(cost.madds_by_layer_type.values()) == cost.madds  # every counted MAdd belongs to a conv or FC
    assert "1x1 conv" in format_cost(cost).splitlines()[2]


def test_profiling_leaves_the_model_in_training_mode():
    model = MobileNetV1(alpha=0.25)
    profile_model(model, 64)
    assert model.training


def test_profile_command_reads_the_resolved_input_size(capsys):
    from mnet_tasks.cost import main

    main(["backbone.alpha=0.5", "backbone.rho=0.714"])
    out = capsys.readouterr().out
    # 0.50 MobileNet-160 is 76 M MAdds in the paper (1000 classes, the config's default head)
    assert "input 160x160: 76.5 M MAdds, 1.332 M params" in out
