"""Training PD-FGC: dataset preparation, stage 1 (appearance / motion, G0), stage 2 (lip, eye, pose
heads), stage 3 (expression + the final generator) and fine-tuning to one person.

Plain PyTorch; nothing here is imported by inference. Modules, one concern each:

- :mod:`.prepare` videos -> clips (aligned faces, mel, landmarks, eye boxes, pose labels);
  :mod:`.shards` the dataset on disk; :mod:`.eyes` eye boxes and the eye anchor;
- :mod:`.config` the settings (defaults in ``configs/stage2.toml``); :mod:`.data` items and the
  step-indexed batch plan; :mod:`.heads` the trained modules; :mod:`.losses` the losses;
- :mod:`.stage2` the training loop; :mod:`.state` checkpoints and exact resume; :mod:`.dist`
  torchrun / DDP helpers; :mod:`.monitor` progress, CSV and TensorBoard; :mod:`.cli` the commands;
- generator stages: :mod:`.gan_loop` the shared loop and checkpoints, :mod:`.stage1`, :mod:`.stage3`,
  :mod:`.finetune`; :mod:`.gan_data` items, :mod:`.augment` augmentations, :mod:`.gan` discriminator,
  hinge and feature matching, :mod:`.decorrelation` Eq. 6 and memory banks, :mod:`.priors` the
  user-supplied prior networks; defaults in ``configs/stage1.toml``, ``stage3.toml``, ``finetune.toml``.

See docs/TRAINING.md.
"""
