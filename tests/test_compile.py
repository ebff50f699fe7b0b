"""torch.compile captures every scheme's network as one graph: scalars, standardised convs and
conv shortcuts cause no graph breaks, which would cost a host round trip per break per step."""

from __future__ import annotations

import pytest
import torch

from nfbench.config import option_config
from nfbench.models import build_model
from nfbench.schemes import SCHEMES, build_scheme


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES.names())
def test_every_scheme_compiles_to_one_graph(scheme):
    net = build_model(
        option_config("model", "resnet20", width=4), build_scheme(option_config("init", scheme)), 10, 3, 8
    )
    x = torch.randn(2, 3, 8, 8)
    torch._dynamo.reset()
    # fullgraph=True raises on the first graph break; the eager backend skips code generation (seconds).
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    assert torch.allclose(compiled(x), net(x), atol=1e-6)
