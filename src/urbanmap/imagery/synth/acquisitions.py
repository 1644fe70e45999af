"""The period's acquisitions as the `synth` tasks need them, decided from the whole region
before any task runs: the WRS-2 footprints over the region, the dates (schedule.py), the
seasonal states, and each scene's scalar draws (SLC-off phase, cloud cover, shadow
offset, cirrus) and cloud cut (ScenePlan).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import numpy as np
from pyproj import Transformer

from urbanmap.core.errors import InputError
from urbanmap.imagery.landsat import CIRRUS_SENSORS, SLC_OFF_SINCE
from urbanmap.imagery.synth import landcover, scenes, schedule
from urbanmap.imagery.synth.schedule import Acquisition, Footprint
from urbanmap.imagery.synth.settings import SynthSettings
from urbanmap.imagery.synth.tiles import SCENE, SceneSpec, scene_valid
from urbanmap.imagery.synth.world import World

#: A scene's sun: azimuth and elevation (degrees), UTC datetime of the overpass.
Sun = tuple[float, float, dt.datetime]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def footprints(settings: SynthSettings, bounds: tuple[float, float, float, float]) -> list[Footprint]:
    """The WRS-2 footprints (synth.footprints) placed over the region `bounds` (xmin, ymin,
    xmax, ymax in the scene CRS)."""
    return [Footprint.crossing(f.path, f.row, bounds, f.side, f.edge, settings.bearing) for f in settings.footprints]


def scene_specs(settings: SynthSettings, acqs: list[Acquisition], states: list[tuple[float, float]],
                world: World) -> tuple[list[SceneSpec], list[Sun]]:
    """Per acquisition: its tiles.SceneSpec (window, scalar draws of its sky, the cloud
    field's cut at its cover measured on a sample of the product's pixels) and its sun
    (azimuth, elevation, UTC datetime). InputError if a footprint misses the region."""
    pixel, cl = world.transform.a, settings.clouds
    specs: list[SceneSpec] = []
    suns: list[Sun] = []
    scales_px = [float(v) / pixel for v in cl.scales_m]
    wet_months = {int(m) for m in cl.wet_months}
    for k, (acq, state) in enumerate(zip(acqs, states)):
        fp = acq.footprint
        win = world.window(fp.polygon())
        if win is None:
            raise InputError(f"synth.footprints: path {fp.path} row {fp.row} does not overlap the region")
        key = (settings.seed, SCENE, settings.year, fp.path, fp.row, acq.acquired.toordinal())
        rng = _rng(*key)
        gap_phase = float(rng.uniform(0.0, 32.0))
        cover = float(rng.uniform(*(cl.wet_cover if acq.acquired.month in wet_months else cl.dry_cover)))
        lon, lat = Transformer.from_crs(world.crs, 4326, always_xy=True).transform(*fp.centre)
        sun = schedule.solar_angles(acq.acquired, lon, lat)
        offset = scenes.shadow_offset(float(rng.uniform(*cl.height_m)), sun[0], sun[1], pixel)
        cirrus_band = acq.sensor in CIRRUS_SENSORS
        cirrus = float(rng.uniform(*cl.cirrus)) if cirrus_band else 0.0
        noise = settings.noise.get(acq.sensor, settings.noise["default"])
        spec = SceneSpec(
            k, key, world.to_win(*win), fp, acq.sensor == "LE07" and settings.slc_off and acq.acquired >= SLC_OFF_SINCE,
            gap_phase, cover, float("inf"), offset, cirrus, cirrus_band, state, tuple(float(v) for v in noise),
        )
        cut = scenes.cloud_cut(key, spec.win, scene_valid(spec, pixel), cover, scales_px)
        specs.append(dataclasses.replace(spec, cloud_cut=cut))
        suns.append(sun)
    return specs, suns


@dataclass(frozen=True)
class ScenePlan:
    """The period's acquisitions, in date order, and what the tasks need of each.

    Attributes:
        acqs: the acquisitions (sensor, footprint, date).
        states: each one's seasonal state (natural, cropland), 0..1.
        specs: each one's tiles.SceneSpec; suns: its sun (azimuth, elevation, UTC time).
        median_state: the median seasonal state over the dates (the truth's).
    """

    acqs: list[Acquisition]
    states: list[tuple[float, float]]
    specs: list[SceneSpec]
    suns: list[Sun]
    median_state: tuple[float, float]


def plan_scenes(settings: SynthSettings, world: World) -> ScenePlan:
    """The period's acquisitions over the world's footprints, their seasonal states and
    scene specs; InputError beyond 254 scenes (the clear count is a uint8)."""
    acqs = schedule.acquisitions(settings.period, settings.sensors, footprints(settings, world.bounds),
                                 settings.scenes_per_footprint)
    if len(acqs) > 254:
        raise InputError(f"synth: {len(acqs)} scenes in period {settings.period}; at most 254 are supported")
    states = [landcover.seasonal_state(a.acquired, settings.peak_doy, settings.crop_peak_doy, settings.crop_days)
              for a in acqs]
    specs, suns = scene_specs(settings, acqs, states, world)
    natural, cropland = (float(np.median([st[k] for st in states])) for k in (0, 1))
    return ScenePlan(acqs, states, specs, suns, (natural, cropland))


