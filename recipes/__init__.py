"""The recipes: one readable script per job, installed with the package as ``multidiff.recipes``.

Each ``train_*`` / ``generate_*`` module has ``main(argv)``; ``multidiff train audio ARGS`` runs
``multidiff.recipes.train_audio.main(ARGS)``, and so does ``python -m multidiff.recipes.train_audio ARGS``
or ``python recipes/train_audio.py ARGS`` from a checkout. ``data/`` holds the scripts that make the
offline benchmark sets.
"""
