"""The geometry of a generated city: land cover, streets, rail, port, transit and hidden factors.

Everything here is a pointwise function of a position, so any window of the
city can be evaluated on its own, in any order, and windows agree where they
meet. Positions are in pixels from the city's north-west corner: pixel
``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``; row ``i`` grows
southwards. ``R`` is half the city's shorter side.

Land cover
----------
An urban potential

    u = exp(-(r / 0.62R)^2) + 0.2 * layout_noise * n_density + 0.15 * exp(-d_road / 0.05R)

(``r`` the distance to the centre, ``n_*`` Gaussian-smoothed noise fields of
unit variance, ``d_road`` the distance to a major road) is cut into dense
(u > 0.72), medium (> 0.45) and sparse (> 0.25) residential; below that lie
forest (``n_rural > 0``) and agriculture. Industry sits where
``n_industrial + 1.2 exp(-d_water / 0.06R) > 1.35`` away from the core and in
the port; parks where ``n_park > 1`` inside the urban area and along the
water front.

Streets are organic: the city is cut into districts (the Voronoi cells of
seeds on a jittered lattice of ``district_m``), each with its own street
orientation and block aspect, and the coordinates are warped by smooth noise
of ~``warp_m`` amplitude before the block grid is laid, so streets bend and
meet at odd angles where districts meet. Block spacing depends on the class
crossed (80 m dense to 170 m industrial). Radial roads (6-8) and two ring
roads are laid on top; a railway runs through the centre station (code
:data:`MARK_BALLAST` / :data:`MARK_RAIL` markings on road pixels). Water is a
meandering river (``river``), a sea behind a wavy shore (``coast``) or a lake
(``lake``); a port (industrial land and piers) lies where the railway meets
the water. Major roads and the railway bridge a river and a lake's outlet,
and stop at the sea.

Hidden factors
--------------
Three fields that no aerial image shows directly, each standardised to mean 0
and sd 1 over the city (affluence, commercial) or in [0, 1] (accessibility):

* ``affluence = std(n_affluence + 0.6 exp(-d_water / 0.1R))``: who lives
  there; rendered into street-level views (facades, street trees, cars).
* ``commercial = std(n_commercial + 1.2 exp(-(r / 0.4R)^2))``: shops and
  offices versus homes; carried by POI counts, categories and text.
* ``accessibility = max_s exp(-d_s / 450 m)`` over the stations ``s`` of the
  transit network (metro lines through the centre, not drawn on any image,
  and the railway's stations): it shapes the mobility flows.

``n_*`` are noise fields with a correlation length of ~0.15R, on a coarse
lattice interpolated bilinearly, so a factor varies smoothly between
neighbouring regions but not with land cover.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lib.data.aerial import MARK_BALLAST, MARK_DASH, MARK_NONE, MARK_RAIL, LandCover

__all__ = ["MARK_BALLAST", "MARK_DASH", "MARK_NONE", "MARK_RAIL", "CityLayout", "smooth_noise"]

_K = len(LandCover)
_SALT_LAYOUT = 11
_MASK64 = (1 << 64) - 1


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """White noise smoothed by a Gaussian of ``sigma`` cells, rescaled to zero mean and unit variance."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    spread = field.std()
    # A single cell has no spread to rescale; it gets no noise.
    return (field - field.mean()) / spread if spread > 0 else np.zeros(shape)


def _bilinear(field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``field`` on the product grid ``rows x cols`` (fractional indices)."""
    i0 = np.clip(np.floor(rows).astype(np.intp), 0, field.shape[0] - 2)
    j0 = np.clip(np.floor(cols).astype(np.intp), 0, field.shape[1] - 2)
    wi = np.clip(rows - i0, 0, 1)[:, None]
    wj = np.clip(cols - j0, 0, 1)[None, :]
    span = slice(j0[0], j0[-1] + 2)
    between_rows = field[i0, span] * (1 - wi) + field[i0 + 1, span] * wi
    j = j0 - j0[0]
    return between_rows[:, j] * (1 - wj) + between_rows[:, j + 1] * wj


def _bilinear_points(field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``field`` at scattered fractional indices ``(rows[n], cols[n])``."""
    i0 = np.clip(np.floor(rows).astype(np.intp), 0, field.shape[0] - 2)
    j0 = np.clip(np.floor(cols).astype(np.intp), 0, field.shape[1] - 2)
    wi = np.clip(rows - i0, 0, 1)
    wj = np.clip(cols - j0, 0, 1)
    top = field[i0, j0] * (1 - wj) + field[i0, j0 + 1] * wj
    bottom = field[i0 + 1, j0] * (1 - wj) + field[i0 + 1, j0 + 1] * wj
    return top * (1 - wi) + bottom * wi


def _hash_uniform(iy: np.ndarray, ix: np.ndarray, key: int, k: int) -> np.ndarray:
    """A uniform number in [0, 1) per integer lattice cell and draw ``k`` (SplitMix64 of the cell index)."""
    z = (iy.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + ix.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
         + np.uint64((key * 0xD1B54A32D192ED03 + k * 0x94D049BB133111EB + 1) & _MASK64))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class CityLayout:
    """The geometry of one city (see the module docstring); built from a :class:`lib.data.city.CityConfig`."""

    _THRESHOLDS = (0.72, 0.45, 0.25)
    # Local street spacing (m) per built-up class; other classes get no local streets.
    _STREET_SPACING = {LandCover.DENSE_RESIDENTIAL: 80.0, LandCover.MEDIUM_RESIDENTIAL: 100.0,
                       LandCover.SPARSE_RESIDENTIAL: 130.0, LandCover.INDUSTRIAL_COMMERCIAL: 170.0}
    district_m = 700.0
    warp_m = 35.0

    def __init__(self, config):
        rng = np.random.default_rng([config.seed, _SALT_LAYOUT])
        self.seed = config.seed
        self.layout = config.layout
        self.res = config.resolution_m
        self.layout_noise = config.layout_noise
        self.height = config.grid[0] * config.tile_px
        self.width = config.grid[1] * config.tile_px
        radius = self.radius = 0.5 * min(self.height, self.width)
        self.centre = (self.height / 2 + rng.uniform(-0.06, 0.06) * self.height,
                       self.width / 2 + rng.uniform(-0.06, 0.06) * self.width)

        # Water: a river roughly west-east through the centre, a shore whose
        # seaward side faces roughly south, or a lake beside the centre; the
        # river and shore meander as two sines in a frame rotated by `water_angle`.
        if config.layout == "river":
            self.water_angle = rng.uniform(-0.5, 0.5)
            self.water_offset = rng.uniform(-0.15, 0.15) * radius
        elif config.layout == "coast":
            self.water_angle = rng.uniform(-0.7, 0.7)
            self.water_offset = rng.uniform(0.5, 0.6) * radius
        else:
            self.water_angle = rng.uniform(0, 2 * np.pi)
            self.water_offset = rng.uniform(0.35, 0.45) * radius  # lake centre's distance from the city centre
        self.meander = [(rng.uniform(0.08, 0.16) * radius, rng.uniform(1.6, 2.4) * radius, rng.uniform(0, 2 * np.pi)),
                        (rng.uniform(0.02, 0.05) * radius, rng.uniform(0.5, 0.8) * radius, rng.uniform(0, 2 * np.pi))]
        self.river_half_width = max(6.0, 0.022 * radius, 10.0 / self.res)
        self.lake_radius = rng.uniform(0.2, 0.26) * radius
        self.lake_lobes = [(rng.uniform(0.08, 0.18), int(k), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)]

        # Roads: radial rays from the centre, two wobbly rings.
        n_radial = int(rng.integers(6, 9))
        self.radial_angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n_radial) / n_radial \
            + rng.uniform(-0.2, 0.2, n_radial)
        self.rings = [(f * radius * rng.uniform(0.95, 1.05), rng.uniform(0, 2 * np.pi)) for f in (0.3, 0.62)]
        self.road_half_width = max(1.5, 7.0 / self.res)
        self.street_gap = np.zeros(_K, dtype=np.float32)  # px between local streets, per class
        for kind, metres in self._STREET_SPACING.items():
            self.street_gap[kind] = metres / self.res
        self.street_width = max(1.0, 8.0 / self.res)
        self.district_px = self.district_m / self.res
        self.warp_px = self.warp_m / self.res

        # Railway: through the centre towards the water (the port), bending gently.
        towards_water = self.water_angle + np.pi / 2 if config.layout != "lake" else self.water_angle
        self.rail_angle = towards_water + rng.uniform(-0.35, 0.35)
        self.rail_bend = (rng.uniform(0.03, 0.06) * radius, rng.uniform(1.5, 2.5) * radius, rng.uniform(0, 2 * np.pi))
        self.rail_half_width = max(2.0, 6.0 / self.res)
        self.track_offset = max(1.0, 2.5 / self.res)
        self.port_half_length = 0.22 * radius
        self.port_depth = 0.09 * radius
        self.pier_period = max(4.0, 90.0 / self.res)
        self.pier_width = max(2.0, 24.0 / self.res)
        self.port_along = 0.0  # set below: where the railway meets the water
        self._rail_key = int(rng.integers(1 << 31))
        self._district_key = int(rng.integers(1 << 31))

        # Noise fields on a coarse lattice, interpolated to pixels on demand.
        self.step = max(2, int(radius // 40))
        shape = (self.height // self.step + 2, self.width // self.step + 2)
        scales = {"density": 0.18, "industrial": 0.10, "park": 0.06, "rural": 0.12, "front": 0.05,
                  "warp_y": 0.08, "warp_x": 0.08, "affluence": 0.15, "commercial": 0.15}
        self.fields = {name: smooth_noise(rng, shape, scale * radius / self.step).astype(np.float32)
                       for name, scale in scales.items()}
        self._land_fields = ("density", "industrial", "park", "rural", "front", "warp_y", "warp_x")

        # Transit: 2-3 metro lines through the centre (not drawn), stations every 700 m; railway stations.
        self.stations = self._stations(rng)
        self.port_along = self._rail_meets_water()
        self.factor_lattices = self._factor_lattices()

    # -- water -----------------------------------------------------------------

    def _water_frame(self, dy, dx):
        """Signed distance (px) to the river centre line or shoreline; positive to the south/seaward."""
        c, s = np.cos(self.water_angle), np.sin(self.water_angle)
        along = dx * c + dy * s
        across = -dx * s + dy * c
        curve = np.full_like(along, self.water_offset)
        slope = np.zeros_like(along)
        for amplitude, wavelength, phase in self.meander:
            k = 2 * np.pi / wavelength
            curve = curve + amplitude * np.sin(k * along + phase)
            slope = slope + amplitude * k * np.cos(k * along + phase)
        return (across - curve) / np.sqrt(1 + slope**2), along

    def _water(self, dy, dx):
        """``(water, to_water, along_shore)``: the water mask, the signed distance (px) to the water's
        edge (negative inside) and the position along the shore, for the port's piers."""
        if self.layout == "lake":
            c, s = np.cos(self.water_angle), np.sin(self.water_angle)
            ly = dy - self.water_offset * s
            lx = dx - self.water_offset * c
            rho = np.hypot(ly, lx)
            psi = np.arctan2(ly, lx)
            edge = self.lake_radius * (1 + sum(a * np.sin(k * psi + p) for a, k, p in self.lake_lobes))
            to_water = rho - edge
            return to_water < 0, to_water, psi * self.lake_radius
        across, along = self._water_frame(dy, dx)
        if self.layout == "river":
            return np.abs(across) < self.river_half_width, np.abs(across) - self.river_half_width, along
        return across > 0, -across, along

    # -- roads and rail --------------------------------------------------------

    def _major_roads(self, dy, dx, r):
        """Distance (px) to the nearest major road and the position along it (px), for dashes."""
        best = np.full(np.broadcast(dy, dx).shape, np.inf, dtype=np.float32)
        along = np.zeros_like(best)
        for angle in self.radial_angles:
            t = dx * np.cos(angle) + dy * np.sin(angle)
            d = np.where(t > 0, np.abs(-dx * np.sin(angle) + dy * np.cos(angle)), r)
            closer = d < best
            best = np.where(closer, d, best)
            along = np.where(closer, t, along)
        psi = np.arctan2(dy, dx)
        for ring_radius, phase in self.rings:
            d = np.abs(r - ring_radius * (1 + 0.05 * np.sin(3 * psi + phase)))
            closer = d < best
            best = np.where(closer, d, best)
            along = np.where(closer, psi * ring_radius, along)
        return best, along

    def _rail(self, dy, dx):
        """Signed distance (px) across the railway's centre line and the position along it."""
        c, s = np.cos(self.rail_angle), np.sin(self.rail_angle)
        along = dx * c + dy * s
        amplitude, wavelength, phase = self.rail_bend
        across = -dx * s + dy * c - amplitude * np.sin(2 * np.pi * along / wavelength + phase)
        return across, along

    def _rail_meets_water(self) -> float:
        """The along-shore position of the port: where the railway's course first meets the water."""
        t = np.linspace(0, 2 * self.radius, 400)
        c, s = np.cos(self.rail_angle), np.sin(self.rail_angle)
        dy, dx = t * s, t * c
        water, _, along_shore = self._water(dy, dx)
        hit = np.flatnonzero(water)
        return float(along_shore[hit[0]]) if hit.size else float(along_shore[-1])

    def _stations(self, rng) -> np.ndarray:
        """``(n, 2)`` station positions (row, col px): metro lines through the centre and the railway's."""
        spacing = min(700.0 / self.res, 0.35 * self.radius)  # small (test) cities get stations too
        points = [self.centre]
        n_lines = int(rng.integers(2, 4))
        angles = rng.uniform(0, np.pi) + np.pi * np.arange(n_lines) / n_lines + rng.uniform(-0.2, 0.2, n_lines)
        for angle in angles:
            for sign in (-1, 1):
                for k in range(1, int(0.9 * self.radius / spacing) + 1):
                    t = sign * k * spacing
                    points.append((self.centre[0] + t * np.sin(angle), self.centre[1] + t * np.cos(angle)))
        c, s = np.cos(self.rail_angle), np.sin(self.rail_angle)
        for t in (-min(1600.0 / self.res, 0.7 * self.radius), min(1600.0 / self.res, 0.7 * self.radius)):
            points.append((self.centre[0] + t * s, self.centre[1] + t * c))
        stations = np.array(points, dtype=np.float64)
        inside = ((stations[:, 0] >= 0) & (stations[:, 0] < self.height)
                  & (stations[:, 1] >= 0) & (stations[:, 1] < self.width))
        stations = stations[inside]
        water, _, _ = self._water(stations[:, 0] - self.centre[0], stations[:, 1] - self.centre[1])
        return stations[~water]

    def _district_streets(self, ys, xs, gap, noise):
        """Where local streets run: a block grid per district, on warped coordinates."""
        wy = ys[:, None] + self.warp_px * noise["warp_y"]
        wx = xs[None, :] + self.warp_px * noise["warp_x"]
        # Nearest district seed among the 3 x 3 lattice cells around each pixel (Worley cells).
        cy = np.floor(wy / self.district_px)
        cx = np.floor(wx / self.district_px)
        best = np.full(wy.shape, np.inf, dtype=np.float32)
        angle = np.zeros(wy.shape, dtype=np.float32)
        aspect = np.ones(wy.shape, dtype=np.float32)
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                iy, ix = (cy + oy).astype(np.int64), (cx + ox).astype(np.int64)
                sy = (iy + _hash_uniform(iy, ix, self._district_key, 0)) * self.district_px
                sx = (ix + _hash_uniform(iy, ix, self._district_key, 1)) * self.district_px
                d = (wy - sy) ** 2 + (wx - sx) ** 2
                closer = d < best
                best = np.where(closer, d, best)
                angle = np.where(closer, np.pi / 2 * _hash_uniform(iy, ix, self._district_key, 2), angle)
                aspect = np.where(closer, 1.0 + 0.8 * _hash_uniform(iy, ix, self._district_key, 3), aspect)
        c, s = np.cos(angle), np.sin(angle)
        u = wx * c + wy * s
        v = -wx * s + wy * c
        with np.errstate(invalid="ignore", divide="ignore"):  # classes without streets have gap 0
            return ((np.remainder(u, gap) < self.street_width)
                    | (np.remainder(v, gap * aspect) < self.street_width))

    # -- land cover ---------------------------------------------------------------

    def classify(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Land cover at the product grid of pixel-centre rows ``ys`` and columns ``xs`` (in px).

        Returns ``(classes, markings)``: uint8 :class:`LandCover` indices and
        uint8 marking codes (:data:`MARK_DASH` on major roads' centre lines,
        :data:`MARK_BALLAST` / :data:`MARK_RAIL` on the railway).
        """
        ys = np.asarray(ys, np.float32)
        xs = np.asarray(xs, np.float32)
        noise = {name: _bilinear(self.fields[name], ys / self.step, xs / self.step) for name in self._land_fields}
        dy = (ys - self.centre[0])[:, None]
        dx = (xs - self.centre[1])[None, :]
        r = np.hypot(dx, dy)
        R = self.radius

        water, to_water, along_shore = self._water(dy, dx)
        d_road, along = self._major_roads(dy, dx, r)

        potential = (np.exp(-((r / (0.62 * R)) ** 2)) + 0.2 * self.layout_noise * noise["density"]
                     + 0.15 * np.exp(-d_road / (0.05 * R)))
        rural = np.where(noise["rural"] > 0, LandCover.FOREST, LandCover.AGRICULTURE)
        cls = np.select([potential > t for t in self._THRESHOLDS],
                        [LandCover.DENSE_RESIDENTIAL, LandCover.MEDIUM_RESIDENTIAL, LandCover.SPARSE_RESIDENTIAL],
                        default=rural).astype(np.uint8)

        industrial = ((noise["industrial"] + 1.2 * np.exp(-np.maximum(to_water, 0) / (0.06 * R)) > 1.35)
                      & (r > 0.22 * R) & (potential > 0.15))
        cls[industrial] = LandCover.INDUSTRIAL_COMMERCIAL
        urban = potential > self._THRESHOLDS[2]
        park = (urban & (noise["park"] > 1.0)) | ((to_water < 0.04 * R) & (potential > 0.3) & (noise["front"] > 0))
        cls[park] = LandCover.GREEN_URBAN

        streets = self._district_streets(ys, xs, self.street_gap[cls], noise)
        cls[(self.street_gap[cls] > 0) & streets] = LandCover.ROADS

        ponds = (((cls == LandCover.GREEN_URBAN) & (noise["park"] > 2.5))
                 | ((cls == LandCover.FOREST) & (noise["rural"] > 2.4)))
        cls[water | ponds] = LandCover.WATER

        # The port: industrial land along the water where the railway arrives, and piers into the water.
        in_port = np.abs(along_shore - self.port_along) < self.port_half_length
        port_land = in_port & ~water & (to_water < self.port_depth)
        piers = (in_port & water & (to_water > -0.6 * self.port_depth)
                 & (np.remainder(along_shore, self.pier_period) < self.pier_width))
        if self.layout == "river":
            piers &= to_water > -0.35 * self.river_half_width  # keep the channel open
        cls[port_land | piers] = LandCover.INDUSTRIAL_COMMERCIAL

        # Major roads and the railway bridge rivers and lakes, and stop at the sea.
        major = d_road < self.road_half_width
        rail_across, rail_along = self._rail(dy, dx)
        rail = np.abs(rail_across) < self.rail_half_width
        if self.layout == "coast":
            major &= ~water
            rail &= ~water
        cls[major | rail] = LandCover.ROADS
        markings = np.zeros(cls.shape, dtype=np.uint8)
        dashes = np.remainder(along * self.res, 12.0) < 6.0
        markings[major & (d_road < 0.5) & dashes] = MARK_DASH
        markings[rail] = MARK_BALLAST
        tracks = np.abs(np.abs(rail_across) - self.track_offset) < 0.5
        markings[rail & tracks] = MARK_RAIL
        return cls, markings

    def landcover(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        """Land cover and markings of pixel rows ``y0:y1`` and columns ``x0:x1`` (see :meth:`classify`)."""
        return self.classify(np.arange(y0, y1) + 0.5, np.arange(x0, x1) + 0.5)

    def coarse_water(self, step: int) -> np.ndarray:
        """Water (bool) at every ``step``-th pixel centre of the whole city: ``(ceil(H/step), ceil(W/step))``.

        Evaluated one band of rows at a time, so memory stays at a few rows of the city.
        """
        xs = np.arange(0, self.width, step) + step / 2
        bands = []
        for y0 in range(0, self.height, 64 * step):
            ys = np.arange(y0, min(self.height, y0 + 64 * step), step) + step / 2
            bands.append(self.classify(ys, xs)[0] == LandCover.WATER)
        return np.concatenate(bands)

    # -- hidden factors ----------------------------------------------------------

    def _factor_lattices(self) -> dict[str, np.ndarray]:
        """Affluence and commercial character on the noise lattice, standardised over the city."""
        rows = (np.arange(self.fields["affluence"].shape[0]) * self.step).astype(np.float32)
        cols = (np.arange(self.fields["affluence"].shape[1]) * self.step).astype(np.float32)
        dy = (rows - self.centre[0])[:, None]
        dx = (cols - self.centre[1])[None, :]
        r = np.hypot(dy, dx)
        _, to_water, _ = self._water(dy, dx)
        raw = {"affluence": self.fields["affluence"] + 0.6 * np.exp(-np.maximum(to_water, 0) / (0.1 * self.radius)),
               "commercial": self.fields["commercial"] + 1.2 * np.exp(-((r / (0.4 * self.radius)) ** 2))}
        inside = (rows < self.height)[:, None] & (cols < self.width)[None, :]
        return {name: ((f - f[inside].mean()) / f[inside].std()).astype(np.float64) for name, f in raw.items()}

    def factors_at(self, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        """The hidden factors at scattered positions (px): ``affluence``, ``commercial``, ``accessibility``."""
        rows = np.asarray(rows, np.float64)
        cols = np.asarray(cols, np.float64)
        out = {name: _bilinear_points(f, rows / self.step, cols / self.step) for name, f in self.factor_lattices.items()}
        if len(self.stations):
            d = np.full(rows.shape, np.inf)
            for sy, sx in self.stations:
                d = np.minimum(d, np.hypot(rows - sy, cols - sx))
            out["accessibility"] = np.exp(-d * self.res / 450.0)
        else:
            out["accessibility"] = np.zeros(rows.shape)
        return out

    def describe(self, pixel_to_map) -> dict:
        """The layout's geometry in map coordinates, for the dataset attributes."""
        east, north = pixel_to_map(np.array([self.centre[0]]), np.array([self.centre[1]]))
        s_east, s_north = pixel_to_map(self.stations[:, 0], self.stations[:, 1])
        return {
            "centre_easting": float(east[0]),
            "centre_northing": float(north[0]),
            "radius_m": self.radius * self.res,
            "water": {"river": "river", "coast": "sea", "lake": "lake"}[self.layout],
            "water_bearing_deg": float(np.degrees(np.pi / 2 + self.water_angle) % 360),
            "radial_road_bearings_deg": [float(np.degrees(np.pi / 2 + a) % 360) for a in self.radial_angles],
            "ring_road_radii_m": [ring * self.res for ring, _ in self.rings],
            "railway_bearing_deg": float(np.degrees(np.pi / 2 + self.rail_angle) % 360),
            "transit_stations": [[float(e), float(n)] for e, n in zip(s_east, s_north, strict=True)],
        }
