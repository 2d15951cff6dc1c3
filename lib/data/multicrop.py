"""The parameters of DINO-style multi-crop views of maps (:mod:`lib.data.map_views` draws them).

Kept apart from the drawing code, which needs torch, so that ``params.yaml``
validates without importing torch: the stage runner checks parameters in a
process that never trains (:mod:`lib.stage`).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from lib.params import Params

__all__ = ["MAX_LOCAL_VIEWS", "OSM_BACKGROUND", "MultiCropConfig"]

#: The most local views a configuration may ask for.
MAX_LOCAL_VIEWS = 10

#: The background colour of the rendered maps, RGB in [0, 1] (``STYLES[0]`` of
#: :mod:`lib.data.map_style`; a test keeps the two equal).
OSM_BACKGROUND: tuple[float, float, float] = (242 / 255, 239 / 255, 233 / 255)


class MultiCropConfig(Params):
    """How many views of which size, scale, rotation and zoom (see the module docstring)."""

    n_global: int = Field(2, ge=1, description="global views (DINO: 2)")
    n_local: int = Field(6, ge=0, le=MAX_LOCAL_VIEWS, description="local views")
    global_size: int = Field(64, ge=4, description="side of a global view in pixels")
    local_size: int = Field(32, ge=4, description="side of a local view in pixels")
    global_scale: tuple[float, float] = Field((0.4, 1.0), strict=False, description="area fraction range, in (0, 1]")
    local_scale: tuple[float, float] = Field((0.05, 0.4), strict=False, description="area fraction range, in (0, 1]")
    rotation: float = Field(180.0, ge=0, le=180, description="largest rotation in degrees, either way")
    zoom: tuple[float, float] = Field((1.0, 1.0), strict=False, description="zoom factor range, > 0 (1 = none)")
    background: tuple[float, float, float] = Field(OSM_BACKGROUND, strict=False,
                                                   description="fill colour, RGB in [0, 1]")

    @field_validator("global_scale", "local_scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (0 < low <= high <= 1):
            raise ValueError(f"needs 0 < min <= max <= 1 (area fractions), got {value}")
        return value

    @field_validator("zoom")
    @classmethod
    def _zoom_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (0 < low <= high):
            raise ValueError(f"needs 0 < min <= max, got {value}")
        return value

    @field_validator("background")
    @classmethod
    def _colour(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0 <= v <= 1 for v in value):
            raise ValueError(f"needs RGB values in [0, 1], got {value}")
        return value
