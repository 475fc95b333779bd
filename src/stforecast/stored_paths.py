"""Driver paths kept in the cache: a re-simulation on saved results draws them once.

``stforecast scenarios --scenarios FILE`` (and the recomputation of the scenarios a results
folder does not keep) simulates on the run's saved posterior with the run's seed, so its driver
paths (``simulate.driver_paths``: ~0.3 s of a ~2 s command at 100,000 paths) are the same at
every call; only the shocks change. ``StoredPaths`` is ``driver_paths`` with a memory: the first
call draws the paths and stores them, later calls with the same inputs read them back
(~0.07 s), and put the random generator in the state the drawing left it in, so the shock draws
that follow are the same numbers either way. A read gives the same arrays, bit for bit (tested).

The entries (kind ``paths``, the fit cache's format in its ``ARRAYS`` layout, ~54 MB at 100,000
paths over three years) live in a folder of their own, ``<cache>/paths``, pruned to the newest
``MAX_ENTRIES`` within ``MAX_BYTES`` (paths larger than half of it are not kept), so they
never push fits out of the fit cache. The key (``paths_key``) is
everything the paths depend on: the posterior's values, the company file, the observations,
the priors' values (every field but documentation, and the base-rates file's location: the base
rates' numbers enter through the growth settings), the growth settings, the ceilings, the
number of paths per draw, the generator's state on entry, stforecast's source and data files
and the package versions. A damaged entry is deleted and the paths drawn again; a cache that
cannot be written costs a warning, never the command. Pure numpy / xarray besides the cache's
files.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import xarray as xr

from .cache import ARRAYS, FitCache, cache_dir, canonical, fit_key, package_hash
from .errors import StforecastError
from .simulate import driver_paths

logger = logging.getLogger(__name__)

KIND = "paths"
#: Entries kept (newest first): a few results folders' worth.
MAX_ENTRIES = 4
MAX_BYTES = 1 << 30


def paths_cache(root=None) -> FitCache:
    """The cache of driver paths: ``<root>/paths`` (default the user's cache folder)."""
    return FitCache((root or cache_dir()) / KIND, max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES,
                    instead="drawing the paths again")


def _dataset(ds: xr.Dataset) -> dict:
    """A Dataset's variables and coordinates as ``canonical`` parts (values, dims; no attrs)."""
    return {"data": {k: {"dims": list(v.dims), "values": np.asarray(v.values)}
                     for k, v in ds.data_vars.items()},
            "coords": {k: {"dims": list(v.dims), "values": [str(x) for x in v.values.flat]}
                       for k, v in ds.coords.items()}}


def _priors(priors) -> dict:
    """The priors' values as ``canonical`` parts, without the base-rates file's location (a
    stored run reads its copy from a temporary folder; the numbers are in the growth settings)."""
    out = canonical(priors)
    if isinstance(out.get("outside_view"), dict):
        out["outside_view"].pop("base_rates", None)
    return out


def paths_key(params: xr.Dataset, company, obs, n_paths: int, rng: np.random.Generator,
              ceilings, priors, growth_settings) -> str | None:
    """The key of the driver paths ``driver_paths`` draws from these arguments, or None when
    one of them has no exact description (a company without its file's text)."""
    if "company" not in company.files:
        return None
    return fit_key(KIND, package=package_hash(), params=_dataset(params),
                   company=company.files["company"][1], observations=obs, n_paths=n_paths,
                   rng=rng.bit_generator.state, ceilings=ceilings, priors=_priors(priors),
                   growth=growth_settings)


@dataclasses.dataclass(frozen=True)
class StoredPaths:
    """``simulate.driver_paths`` (same arguments, same result) that reads the paths from
    ``cache`` when they were drawn before (unless ``read`` is False: ``stforecast run
    --refit``) and stores them when it drew them."""

    cache: FitCache
    read: bool = True

    def __call__(self, params: xr.Dataset, company, obs, n_paths: int,
                 rng: np.random.Generator, ceilings=None, priors=None,
                 growth_settings=None) -> xr.Dataset:
        args = (params, company, obs, n_paths, rng, ceilings, priors, growth_settings)
        try:
            key = paths_key(*args)
        except TypeError as exc:  # something canonical cannot describe: no memory
            logger.debug(f"driver paths not cached ({exc})")
            key = None
        if key is None:
            return driver_paths(*args)
        entry = self.cache.load(KIND, key) if self.read else None
        if entry is not None:
            groups, attrs = entry
            try:
                rng.bit_generator.state = attrs["rng_after"]
                drivers = groups["drivers"]
                logger.info(f"driver paths read from the cache ({self.cache.path(KIND, key)})")
                return drivers
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning(f"{self.cache.path(KIND, key)}: not an entry of driver paths "
                               f"({exc!r}); drawing them again")
        drivers = driver_paths(*args)
        size = sum(v.nbytes for v in drivers.variables.values())
        if size > self.cache.max_bytes // 2:  # it would crowd out every other entry
            logger.info(f"driver paths not kept ({size / 2**20:,.0f} MB: more than half of "
                        f"the {self.cache.max_bytes / 2**20:,.0f} MB {self.cache.root} holds)")
            return drivers
        try:
            path = self.cache.store(KIND, key, {"drivers": drivers},
                                    {"rng_after": rng.bit_generator.state}, layout=ARRAYS,
                                    durable=False)
            logger.info(f"driver paths kept for re-simulations ({path})")
        except (OSError, StforecastError, TypeError) as exc:
            logger.warning(f"driver paths not stored in {self.cache.root} "
                           f"({' '.join(str(exc).split())})")
        return drivers
