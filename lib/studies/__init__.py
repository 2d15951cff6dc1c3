"""The studies: one package each, ``lib/studies/<study>/``.

A study package holds its parameter models (``params.py``), its steps and its
figures, and declares in its ``__init__``

* ``SECTIONS``: the params.yaml sections it owns, name -> pydantic model;
* ``STAGES``: its pipeline stages (:class:`lib.stage.Stage`).

:mod:`lib.stage` and :mod:`lib.params` find both here, so a new study is a new
folder. A study imports the shared layers (``lib.data``, ``lib.models``,
``lib.losses``, ``lib.explain``, ``lib.eval``, ``lib.plots``) and the frame,
never another study; nothing shared imports a study.
"""
