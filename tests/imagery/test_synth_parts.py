"""The synthetic scenes' parts on small arrays: DN scaling, the sky and its QA bits,
random fields, the truth's reflectance, fringe growth, the WRS-2 schedule, SLC-off gaps,
end-members, the tasks' polygon files and the stage's settings (the stage itself:
test_synth.py)."""

from __future__ import annotations

import datetime as dt

import geopandas as gpd
import numpy as np
import pytest

from helpers.project import REPO
from urbanmap.core import config
from urbanmap.imagery.landsat import BANDS, QA, SR_SCALE, to_dn, to_reflectance
from urbanmap.imagery.synth import fields, landcover, scenes, schedule, truth
from urbanmap.imagery.synth.endmembers import read_endmembers
from urbanmap.imagery.synth.fields import Win


def test_dn_scale_round_trip():
    r = np.random.default_rng(0).uniform(-0.199, 1.6, 100_000)  # DN 1 .. 65455
    back = to_reflectance(to_dn(r))
    assert np.abs(back - r).max() <= SR_SCALE / 2 + 1e-6
    assert to_dn(0.0) == 7273  # (0 + 0.2) / 0.0000275
    assert to_dn(np.nan) == 0 and np.isnan(to_reflectance(np.uint16(0)))
    assert to_dn(-0.5) == 1  # never the fill value for a valid pixel


def test_qa_bits_follow_the_sky_drawn():
    win = Win(100, -50, 300, 300)  # global pixel indices: any window, negative ones too

    def valid(w, stride=1):  # pixels of global column >= 200 are outside the footprint
        cols = w.c0 + stride * np.arange(w.w)
        return np.broadcast_to(cols < 200, (w.h, w.w)).copy()

    key, scales = (7, 404, 1), [60, 20]
    cut = scenes.cloud_cut(key, win, valid, 0.3, scales)
    sky = scenes.draw_sky(key, win, valid, 0.3, scales_px=scales, dilate_px=3, shadow_rc=(25, -40), cirrus=0.05, cut=cut)
    v = valid(win)
    water = np.zeros_like(v)
    water[:50, :50] = True
    for cirrus_band in (True, False):
        qa = scenes.qa_pixel(v, sky, water, cirrus_band)
        bit = lambda b, qa=qa: (qa >> b) & 1 == 1  # noqa: E731
        assert (qa[~v] == 1).all() and not bit(QA.FILL)[v].any()
        assert (bit(QA.CLOUD)[v] == sky.cloud[v]).all()
        assert (bit(QA.DILATED_CLOUD)[v] == sky.dilated[v]).all()
        assert (bit(QA.CLOUD_SHADOW)[v] == sky.shadow[v]).all()
        assert (bit(QA.CLEAR)[v] == ~(sky.cloud | sky.dilated)[v]).all()
        assert (bit(QA.WATER)[v] == (water & ~sky.cloud)[v]).all()
        assert ((qa[v & sky.cloud] >> QA.CLOUD_CONFIDENCE) & 3 == 3).all()
        assert ((qa[v & ~sky.cloud] >> QA.CLOUD_CONFIDENCE) & 3 == 1).all()
        assert (bit(QA.CIRRUS)[v] == (sky.cirrus[v] if cirrus_band else False)).all()
    assert abs(sky.cloud[v].mean() - 0.3) < 1e-3  # the cut measured on the scene's pixels
    assert sky.dilated.any() and sky.shadow.any() and sky.cirrus.any()
    assert not (sky.cloud & (sky.dilated | sky.shadow)).any()
    # the ring is within 3 pixels of a cloud and the shadow is the cloud displaced, clouds
    # in the halo around the window included: the sky of a part is that part of the sky
    from scipy import ndimage

    outer = win.grow(*scenes.sky_halo(3, (25, -40)))
    big = scenes.draw_sky(key, outer, valid, 0.3, scales_px=scales, dilate_px=3, shadow_rc=(25, -40), cirrus=0.05, cut=cut)
    inner = win.crop(outer)
    near = ndimage.binary_dilation(big.cloud, np.ones((3, 3), bool), iterations=3)[inner]
    assert (sky.dilated <= near).all()
    assert (sky.shadow <= scenes.shift(big.cloud, 25, -40)[inner]).all()
    for name in ("cloud", "dilated", "cirrus", "opacity", "cirrus_depth"):
        np.testing.assert_array_equal(getattr(sky, name), getattr(big, name)[inner])


def test_fields_are_pure_functions_of_global_pixel_coordinates():
    """Any window gives the same values where windows overlap; standardised analytically."""
    whole = Win(-1000, 2000, 1200, 900)
    parts = [Win(-1000, 2000, 517, 900), Win(-483, 2000, 683, 311), Win(-483, 2311, 683, 589)]
    for make in (
        lambda w: fields.field((1, 2), w, 133.0),
        lambda w: fields.field_octaves((1, 3), w, [133.0, 50.0, 15.0], [1.0, 0.5, 0.25]),
        lambda w: fields.pixel_noise((1, 4), w),
    ):
        full = make(whole)
        for part in parts:
            np.testing.assert_array_equal(make(part), full[part.crop(whole)])
    big = fields.field((5, 6), Win(0, 0, 3000, 3000), 20.0)
    assert abs(float(big.mean())) < 0.05 and 0.9 < float(big.std()) < 1.05
    assert abs((big >= fields.threshold(0.2)).mean() - 0.2) < 0.03  # shares by the normal quantile
    strided = fields.field((5, 6), Win(0, 0, 750, 750), 20.0, stride=4)
    np.testing.assert_array_equal(strided, big[::4, ::4])


def test_truth_reflectance_is_the_median_over_the_dates(shared_data):
    """Reflectance is affine in the seasonal state, so truth = reflectance at the median
    states; check it against the stack of every date on a small landscape."""
    cfg = config.load(REPO)
    em = read_endmembers(shared_data / "spectra" / "landsat_spectra.csv", {k: list(v) for k, v in cfg.synth.endmembers.items()}, 0.6)
    settlement = np.zeros((60, 80), np.float32)
    settlement[10:40, 20:50] = 0.6
    lc = cfg.synth.landcover
    land = landcover.build_landscape(
        (3, 101), Win(-500, 700, 60, 80), settlement, em, 30.0, water=0.05, soil=0.1, vegetation=0.4, terrain_m=900,
        patch_m=300, parcel_m=[240, 360], fallow=float(lc.fallow), texture=0.12, park_fraction=0.08,
    )
    dates = [dt.date(2019, 1, 15) + dt.timedelta(days=23 * k) for k in range(14)]
    states = [landcover.seasonal_state(d, 250, 245, 200) for d in dates]
    stack = np.stack([landcover.reflectance(land, em, *s) for s in states])
    expected = np.median(stack, axis=0)
    med = [float(np.median([s[k] for s in states])) for k in (0, 1)]
    np.testing.assert_allclose(landcover.reflectance(land, em, *med), expected, atol=2e-6)
    classes = set(np.unique(land.classes(0.5)).tolist())
    assert {landcover.URBAN, landcover.VEGETATION, landcover.CROPLAND} <= classes


def test_fringe_growth_is_nested_across_years():
    urban = np.zeros((9, 9), bool)
    urban[3:6, 3:6] = True
    priority = np.random.default_rng(0).random(urban.shape)
    args = (np.ones_like(urban), np.zeros(urban.shape))
    early = truth.fringe_growth(urban, *args, priority, 0.2, 3)
    late = truth.fringe_growth(urban, *args, priority, 0.6, 3)
    assert (early <= late).all() and late.sum() > early.sum()
    assert not (late & urban).any()
    assert late[2:7, 2:7].sum() == late.sum()  # only the ring around the city


def test_schedule_follows_the_wrs2_calendar():
    table = config.load(REPO).synth.sensors
    assert schedule.sensors_for_year(2010, table) == ["LT05", "LE07"]
    assert schedule.sensors_for_year(2019, table) == ["LC08"]
    passes = schedule.overpasses(2010, 26, ["LT05", "LE07"])
    by_sensor = {s: [d for d, x in passes if x == s] for s in ("LT05", "LE07")}
    for dates in by_sensor.values():
        assert {(b - a).days for a, b in zip(dates, dates[1:])} == {16}
    assert (by_sensor["LE07"][0] - by_sensor["LT05"][0]).days % 16 == 8
    west = schedule.overpasses(2010, 27, ["LT05"])
    assert (west[0][0] - by_sensor["LT05"][0]).days % 16 == 7  # the adjacent path, 7 days later
    picked = schedule.pick_evenly(passes, 8)
    assert len(picked) == 8 and picked == sorted(picked)
    assert picked[0][0].month <= 2 and picked[-1][0].month >= 11
    acq = schedule.Acquisition("LC08", schedule.Footprint(26, 47, (0, 0), (0, 1), (1, 0)), dt.date(2019, 3, 15))
    fields = acq.product_id.split("_")
    assert fields[:4] == ["LC08", "L2SP", "026047", "20190315"] and fields[4] > fields[3]
    assert schedule.utm_crs(-99.13, 19.43).to_epsg() == 32614


def test_slc_off_gaps_lose_about_a_fifth_of_a_scene():
    along = np.arange(-90_000, 90_000, 30.0)[:, None]
    across = np.arange(-92_500, 92_500, 30.0)[None, :]
    gaps = scenes.slc_off_gaps(along, across, 30.0)
    assert 0.17 < gaps.mean() < 0.25
    assert not gaps[:, np.abs(across[0]) < 10_000].any()  # none near the ground track


def test_spectra_without_a_group_or_a_band_are_refused():
    import pandas as pd

    from urbanmap.core.errors import InputError
    from urbanmap.imagery.synth.endmembers import group_spectra

    cfg = config.load(REPO)
    prefixes = {k: list(v) for k, v in cfg.synth.endmembers.items()}
    rows = pd.DataFrame([[0.1] * 6 + [c] for c in ("impervious/built/road", "vegetation", "pervious/npv/litter", "pervious/bare/soil")],
                        columns=[*BANDS, "class"])
    with pytest.raises(InputError, match="no usable spectrum for end-member group 'water'"):
        group_spectra(rows, prefixes, 0.6)
    with pytest.raises(InputError, match="lacks column.*swir2"):
        group_spectra(rows.drop(columns="swir2"), prefixes, 0.6)
    rows.loc[4] = [0.02] * 6 + ["water"]
    assert len(group_spectra(rows, prefixes, 0.6).water) == 1


def test_tasks_read_their_tiles_polygons_in_painting_order(tmp_path):
    """write_polygons reorders rows for spatial reads; _polygons_in gives back exactly the
    polygons meeting a tile, in the order they were written (the painting order)."""
    import shapely

    from urbanmap.imagery.synth import tiles

    rng = np.random.default_rng(5)
    centres = rng.uniform(0, 100_000, (2000, 2))
    polygons = shapely.buffer(shapely.points(centres), rng.uniform(50, 2000, 2000))
    frame = gpd.GeoDataFrame({"target": np.arange(2000.0)}, geometry=polygons, crs="EPSG:32614")
    tiles.write_polygons(frame, tmp_path / "p.parquet")
    for bounds in ((0, 0, 16_000, 16_000), (40_000, 52_000, 56_000, 68_000), (200_000, 0, 216_000, 16_000)):
        got, cols = tiles._polygons_in(str(tmp_path / "p.parquet"), bounds, ["target"])
        b = shapely.bounds(polygons)
        meets = (b[:, 0] <= bounds[2]) & (b[:, 2] >= bounds[0]) & (b[:, 1] <= bounds[3]) & (b[:, 3] >= bounds[1])
        np.testing.assert_array_equal(cols["target"], np.flatnonzero(meets).astype(float))
        assert all(shapely.equals(g, polygons[i]) for g, i in zip(got, np.flatnonzero(meets)))


def test_synth_settings_are_read_and_checked_once(in_repo):
    from urbanmap.core.errors import InputError
    from urbanmap.imagery.synth.settings import SynthSettings

    s = SynthSettings.from_config(config.load(REPO, ["period=2019", "out_dir=/x"]))
    assert (s.year, s.sensors, s.later, s.pixel) == (2019, ["LC08"], True, 30.0)
    assert [(f.path, f.row, f.side) for f in s.footprints] == [(27, 47, "west"), (26, 47, "east")]
    assert str(s.scenes_dir) == "/x/valle_de_mexico/scenes/2019" and s.truth_cells.parent == s.truth_dir
    assert s.landscape["parcel_m"] == [240.0, 360.0] and s.clouds.height_m == (1000.0, 3000.0)
    with pytest.raises(InputError, match="synth.pixel_size: must be positive"):
        SynthSettings.from_config(config.load(REPO, ["synth.pixel_size=0"]))
    with pytest.raises(InputError, match=r"synth.footprints.1.edge takes a number \(like 0.25\), got 'far'"):
        config.load(REPO, ["synth.footprints.1.edge=far"])
    with pytest.raises(InputError, match=r"synth.footprints\[1\]: needs path, row, side and edge"):
        SynthSettings.from_config(config.load(REPO, ["synth.footprints.1.edge=null"]))
