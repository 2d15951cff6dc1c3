"""Figure helpers every study uses (matplotlib + seaborn); each returns its Figure.

* :mod:`lib.plots.grids` - images in grids and mosaics, true-colour composites;
* :mod:`lib.plots.curves` - training curves per epoch;
* :mod:`lib.plots.maps` - values of tiles at their places.

A study's own figures live in ``lib/studies/<study>/figures.py``.
"""

import seaborn as sns

sns.set_theme(context="notebook", style="white")
