"""One definition of the view settings (size, field of view, frame rate, backdrop) for every
command that renders an avatar: the same checks, the same error naming the field."""

from __future__ import annotations

import pytest

from pointillist_data.errors import InputError
from pointillist_data.reenactment.config import AnimateConfig
from pointillist_data.render_config import RenderConfig
from pointillist_data.view_config import ViewSettings
from pointillist_model.config import AvatarConfig

MAKERS = {"render": lambda **kw: RenderConfig(fit="f", out="o", **kw), "animate": AnimateConfig,
          "avatar": AvatarConfig}
BAD = [("size", 7), ("size", 6), ("size", 255), ("fov_deg", 0.0), ("fov_deg", 180.0), ("fps", 0),
       ("background", -0.1), ("background", 1.5)]


@pytest.mark.parametrize("command", sorted(MAKERS))
@pytest.mark.parametrize(("name", "value"), BAD)
def test_every_rendering_config_refuses_the_same_bad_view_values(command, name, value):
    assert issubclass(type(MAKERS[command]()), ViewSettings)
    with pytest.raises(InputError, match=f"^{name}: "):
        MAKERS[command](**{name: value})


@pytest.mark.parametrize("command", sorted(MAKERS))
def test_edge_values_are_accepted(command):
    cfg = MAKERS[command](size=8, fov_deg=179.0, fps=1, background=0.0)
    assert (cfg.size, cfg.fov_deg, cfg.fps, cfg.background) == (8, 179.0, 1, 0.0)
