"""The library of each DVC stage, one module per stage and named like it (dvc.yaml's stage `make_cam` runs
stages/make_cam.py, which calls textwsss.pipeline.make_cam). Each module's `run(params, ws)` is the whole
stage; the building blocks it uses live in the topical packages (data, guide, models, losses, training, ...).
"""
