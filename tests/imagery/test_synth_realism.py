"""Where the synthetic census and image disagree (synth.realism), one mechanism per test,
on small landscapes: with the knob off a cell's truth agrees with its census label; with
it on, the expected share of land (and of cells) disagrees.

A "cell" here is a block of 33 x 33 pixels of 30 m (about the 1 km grid cell); it is
urban in the truth when at least half its pixels are (synth.urban_min).
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from helpers.project import REPO
from urbanmap.core import config
from urbanmap.imagery.synth import landcover, zones
from urbanmap.imagery.synth.endmembers import read_endmembers
from urbanmap.imagery.synth.fields import Win
from urbanmap.imagery.synth.landcover import AridSoil, OpenLand, Sprawl
from urbanmap.imagery.synth.tiles import window_bounds, window_transform

CELL, PX = 33, 30.0
KEY = (42, 101)
CFG = config.load(REPO)
REALISM = CFG.synth.realism


@pytest.fixture(scope="module")
def em(shared_data):
    prefixes = {k: list(v) for k, v in CFG.synth.endmembers.items()}
    return read_endmembers(shared_data / "spectra" / "landsat_spectra.csv", prefixes, float(CFG.synth.max_reflectance))


def build(em, win: Win, settlement: np.ndarray, soil: float = 0.1, vegetation: float = 0.4,
          **mechanisms) -> landcover.Landscape:
    """The default landscape (synth.landcover, synth.urban) of `win` without water."""
    lc, u = CFG.synth.landcover, CFG.synth.urban
    return landcover.build_landscape(
        KEY, win, settlement, em, PX, water=0.0, soil=soil, vegetation=vegetation, terrain_m=float(lc.terrain_m),
        patch_m=float(lc.patch_m), parcel_m=[float(v) for v in lc.parcel_m], fallow=float(lc.fallow),
        texture=float(u.texture), park_fraction=float(u.parks), **mechanisms,
    )


def cell_means(a: np.ndarray) -> np.ndarray:
    """Mean of each 33 x 33 block (the window is whole cells)."""
    h, w = a.shape
    return a.reshape(h // CELL, CELL, w // CELL, CELL).mean(axis=(1, 3))


def urban_cells(land: landcover.Landscape) -> np.ndarray:
    """Bool per cell: the truth's class is urban."""
    return cell_means(land.classes(float(CFG.synth.urban_min.pixel)) == landcover.URBAN) >= float(CFG.synth.urban_min.cell)


def mask(polygons, win: Win) -> np.ndarray:
    return landcover.polygon_mask(list(polygons), window_transform(win, PX), (win.h, win.w))


def test_open_land_leaves_patches_of_urban_localities_unbuilt(em):
    """Parks, vacant lots and quarries inside a dense urban locality: with the default
    share (0.12) about that share of its land is unbuilt, in patches large enough to turn
    some of its cells non-urban; rural localities keep none."""
    win = Win(-3000, 4000, 15 * CELL, 15 * CELL)  # 15 km x 15 km, all one urban locality
    settlement = np.full((win.h, win.w), 0.75, np.float32)
    everywhere = np.ones((win.h, win.w), bool)
    share = float(REALISM.open_land.share)
    open_land = OpenLand(share, float(REALISM.open_land.patch_m), tuple(float(v) for v in REALISM.open_land.uses))

    off = build(em, win, settlement, urban=everywhere)
    assert urban_cells(off).all()  # every cell of the urban locality looks urban: label and truth agree
    on = build(em, win, settlement, urban=everywhere, open_land=open_land)
    unbuilt = on.impervious < 0.5 * off.impervious  # the rest is the same landscape
    np.testing.assert_array_equal(on.impervious[~unbuilt], off.impervious[~unbuilt])
    assert abs(unbuilt.mean() - share) < 0.05
    disagree = 1 - urban_cells(on).mean()
    assert 0.02 <= disagree <= 2 * share, disagree  # whole cells unbuilt: patches, not specks
    # every use is there: irrigated parks, weedy lots, bare bright quarries
    assert {landcover.VEGETATION, landcover.SOIL} <= set(np.unique(on.cover[unbuilt]).tolist())
    quarry = unbuilt & (on.g_max == 0)
    assert quarry.any() and (on.i_dry[quarry] >= em.dry_offsets["soil"][0] + 0.9 * len(em.soil) - 1).all()
    rural = build(em, win, settlement, urban=~everywhere, open_land=open_land)
    np.testing.assert_array_equal(rural.impervious, off.impervious)


def test_dense_rural_localities_are_built_like_urban_ones(em):
    """A rural locality as dense as the default window's median one (3,263 per km²): with
    dense_rural null its cells are non-urban in the truth, as its census label says; with
    the default 1,500 per km² it is built up like an urban locality of that density and
    its cells look urban."""
    area_km2 = 16.0
    square = shapely.box(0, 0, 4000, 4000)
    polygons, population = [square, square, square], [3263 * area_km2, 3263 * area_km2, 800 * area_km2]
    kind = ["urban", "rural", "rural"]
    args = {k: float(v) for k, v in CFG.synth.urban.items() if k in ("at_density", "value", "per_decade", "low", "high",
                                                                      "rural_factor")}
    _, off, urban = landcover.settlement_targets(polygons, population, kind, **args)
    _, on, _ = landcover.settlement_targets(polygons, population, kind, **args, dense_rural=float(REALISM.dense_rural))
    assert urban.tolist() == [True, False, False]
    assert off[1] == pytest.approx(off[0] * args["rural_factor"]) and on[1] == pytest.approx(on[0])
    assert on[2] == pytest.approx(off[2])  # a sparse rural locality keeps the rural factor

    win = Win(2000, -1000, 4 * CELL, 4 * CELL)
    lands = [build(em, win, np.full((win.h, win.w), t, np.float32)) for t in (off[1], on[1])]
    urban_share = [float((land.classes(0.5) == landcover.URBAN).mean()) for land in lands]
    assert urban_share[0] < 0.5 < urban_share[1], urban_share
    looks_urban = [urban_cells(land).mean() for land in lands]
    assert looks_urban[1] - looks_urban[0] >= 0.3, looks_urban


def test_arid_soils_take_the_spectra_nearest_built_ones(em):
    """The pool is the share of soil spectra nearest a built spectrum; with the default
    share (0.2) about a fifth of the bare-soil land draws from it instead of ~2.5%."""
    pool = em.soil_near_built(float(REALISM.arid_soil.pool))
    assert len(pool) == round(float(REALISM.arid_soil.pool) * len(em.soil)) and (np.diff(pool.astype(int)) > 0).all()
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(em.impervious).query(em.soil)
    others = np.setdiff1d(np.arange(len(em.soil)), pool)
    assert distance[pool].max() <= distance[others].min()

    win = Win(500, 500, 12 * CELL, 12 * CELL)
    settlement = np.zeros((win.h, win.w), np.float32)
    share = float(REALISM.arid_soil.share)
    arid = AridSoil(share, float(REALISM.arid_soil.patch_m), float(REALISM.arid_soil.pool))
    start = em.dry_offsets["soil"][0]
    drawn = {}
    for name, knob in (("off", AridSoil()), ("on", arid)):
        land = build(em, win, settlement, soil=0.95, vegetation=0.0, arid_soil=knob)
        bare = land.cover == landcover.SOIL
        assert bare.mean() > 0.5
        drawn[name] = np.isin(land.i_dry[bare].astype(int) - start, pool).mean()
    assert drawn["off"] < 0.06
    assert abs(drawn["on"] - share) < 0.1, drawn


def test_polygons_drawn_later_leave_the_urban_fringe_unbuilt(em):
    """The default vintage (2015) and growth (1.12% a year): 2010 sees 5.4% of the urban
    area, at its edge, not yet built; 2019 sees it all. The ring follows the union of the
    localities, not the edges they share."""
    vintage, rate = int(REALISM.vintage.year), float(REALISM.vintage.growth_rate)
    share = zones.unbuilt_share(2010, vintage, rate)
    assert share == pytest.approx(1 - np.exp(-5 * rate)) and 0.05 < share < 0.06
    assert zones.unbuilt_share(2019, vintage, rate) == 0.0 == zones.unbuilt_share(2010, None, rate)

    disc = shapely.Point(0, 0).buffer(5000, quad_segs=64)
    ring = zones.young_fringe(zones.urban_area([disc]), share)
    assert shapely.area(ring).sum() / disc.area == pytest.approx(share, rel=0.02)

    # two neighbouring localities (a 4 x 4 km town) on the window's cells
    win = Win(-200, 300, 6 * CELL, 6 * CELL)
    x0, _, _, y1 = window_bounds(win, PX)
    west, east = shapely.box(x0 + 1000, y1 - 5000, x0 + 3000, y1 - 1000), shapely.box(x0 + 3000, y1 - 5000, x0 + 5000, y1 - 1000)
    parts = zones.urban_area([west, east])
    assert len(parts) == 1
    ring = zones.young_fringe(parts, share)
    assert not shapely.intersects(shapely.union_all(ring), shapely.Point(x0 + 3000, y1 - 3000).buffer(300))
    town = mask([west, east], win)
    settlement = np.where(town, np.float32(0.75), np.float32(0))
    young = mask(ring, win) & town
    assert young.sum() / town.sum() == pytest.approx(share, abs=0.01)
    built = build(em, win, settlement, urban=town)
    before = build(em, win, settlement, urban=town, young=young)
    assert (before.impervious[young] == 0).all()
    np.testing.assert_array_equal(before.impervious[~young], built.impervious[~young])
    assert (built.impervious[young] > 0).all()


def test_sprawl_builds_part_of_the_band_outside_the_urban_area(em):
    """The default band (584 m) and share (0.25): outside the locality, a quarter of the
    band is built over, so cells next to the town are partly built but stay non-urban
    (mixed cells near the label thresholds); none is built with the share at 0."""
    win = Win(100, 100, 6 * CELL, 6 * CELL)
    x0, _, _, y1 = window_bounds(win, PX)
    town = shapely.box(x0 + 2000, y1 - 4000, x0 + 4000, y1 - 2000)
    width = float(REALISM.sprawl.width_m)
    band = zones.sprawl_zone(zones.urban_area([town]), width)
    assert shapely.area(band).sum() == pytest.approx(4 * 2000 * width + np.pi * width**2, rel=0.01)
    assert not shapely.intersects(shapely.union_all(band).buffer(-1), town)

    inside = mask([town], win)
    zone = mask(band, win)
    settlement = np.where(inside, np.float32(0.75), np.float32(0))
    share = float(REALISM.sprawl.share)
    sprawl = Sprawl(share, float(REALISM.sprawl.impervious), float(REALISM.sprawl.cluster_m))
    off = build(em, win, settlement, urban=inside, sprawl=zone)
    on = build(em, win, settlement, urban=inside, sprawl=zone, sprawl_built=sprawl)
    assert not (off.impervious[~inside] > 0).any()
    assert abs((on.impervious[zone] > 0).mean() - share) < 0.1
    assert not (on.impervious[~zone & ~inside] > 0).any()
    # the ring of cells around the town's 2 x 2: partly built, never urban
    ring_cells = np.ones((6, 6), bool)
    ring_cells[2:4, 2:4] = False
    ring_cells[[0, 0, 5, 5], [0, 5, 0, 5]] = False  # the corners lie beyond the band
    built, urban = cell_means(on.impervious > 0)[ring_cells], cell_means(on.classes(0.5) == landcover.URBAN)[ring_cells]
    assert built.mean() > 0.05 and urban.max() < 0.5, (built, urban)


def test_realism_settings_are_checked(in_repo):
    from urbanmap.core.errors import InputError
    from urbanmap.imagery.synth.settings import SynthSettings

    s = SynthSettings.from_config(config.load(REPO, ["synth.realism.vintage.year=null", "synth.realism.dense_rural=null"]))
    assert s.realism.vintage is None and s.settlement["dense_rural"] is None
    assert s.landscape["open_land"].uses == (0.36, 0.43, 0.21)
    with pytest.raises(InputError, match=r"synth.realism.open_land.uses: needs three shares"):
        SynthSettings.from_config(config.load(REPO, ["synth.realism.open_land.uses=[1,2]"]))
    with pytest.raises(InputError, match=r"synth.realism.sprawl.share: must be a share between 0 and 1"):
        SynthSettings.from_config(config.load(REPO, ["synth.realism.sprawl.share=2"]))
