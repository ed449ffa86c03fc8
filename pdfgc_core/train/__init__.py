"""Training PD-FGC: dataset preparation and the stage-2 heads (lip, eye, pose).

Plain PyTorch; nothing here is imported by inference. Modules, one concern each:

- :mod:`.prepare` videos -> clips (aligned faces, mel, landmarks, eye boxes, pose labels);
  :mod:`.shards` the dataset on disk; :mod:`.eyes` eye boxes and the eye anchor;
- :mod:`.config` the settings (defaults in ``configs/stage2.toml``); :mod:`.data` items and the
  step-indexed batch plan; :mod:`.heads` the trained modules; :mod:`.losses` the losses;
- :mod:`.stage2` the training loop; :mod:`.state` checkpoints and exact resume; :mod:`.dist`
  torchrun / DDP helpers; :mod:`.monitor` progress, CSV and TensorBoard; :mod:`.cli` the commands.

See docs/TRAINING.md.
"""
