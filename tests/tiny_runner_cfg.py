"""The config of a tiny NFNet ``ImageClassifier`` trained in process by an MMEngine
``Runner`` (iteration loop, ``InfiniteSampler``, ``AGCOptimWrapper``, a checkpoint every
2 iterations), shared by the checkpoint / resume tests.

Importable from any test module: pytest puts ``tests/`` on ``sys.path`` (the tests
directory has no ``__init__.py``), as for ``conftest``.
"""
import os.path as osp
import uuid

#: Smaller than conftest's TINY_NFNET_ARCH (one block per stage) to keep runs short.
TINY_ARCH = dict(depths=(1, 1, 1, 1), widths=(32, 64, 128, 128), group_width=16,
                 stem_channels=(8, 8, 16, 16))


def make_tiny_data(root):
    """``make_classification_demo``'s 6-class set at 32 px under ``root``: 2 training
    and 1 validation image per class; returns its data root."""
    from demo_data import make_classification_demo  # tools/data/demo_data.py
    make_classification_demo(str(root), seed=0, num_train_per_class=2, num_val_per_class=1,
                             image_size=32)
    return osp.join(str(root), 'cls')


def tiny_runner_cfg(data_root, work_dir, max_iters, *, augment=False, drop_rate=0.,
                    val_interval=None, custom_hooks=None, deterministic=False):
    """``Runner(**cfg)`` keyword arguments for ``max_iters`` iterations of batch 4 on
    the ``make_tiny_data`` set at ``data_root``.

    Args:
        augment: RandomResizedCrop + RandomFlip in the training pipeline (NumPy's
            global generator).
        drop_rate: stochastic depth in the backbone and dropout before the classifier
            (torch's generator).
        val_interval: validate on ``val/`` every this many iterations; None: no
            validation loop.
        custom_hooks: the ``custom_hooks`` entry; None leaves it out, so that the
            caller can pass ``custom_hooks=`` to ``Runner`` itself.
        deterministic: ``randomness.deterministic``.
    """
    from nfnets_mm.models.backbones import NFNet
    in_channels = NFNet(arch=TINY_ARCH).out_channels[-1]
    dataset = dict(type='CustomDataset', data_root=data_root)
    augmentation = [dict(type='RandomResizedCrop', scale=32, backend='pillow'),
                    dict(type='RandomFlip', prob=0.5, direction='horizontal')]
    cfg = dict(
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=6,
                                   mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True),
            backbone=dict(type='NFNet', arch=TINY_ARCH, drop_path_rate=drop_rate),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='NFNetClsHead', num_classes=6, in_channels=in_channels,
                      dropout_rate=drop_rate, loss=dict(type='CrossEntropyLoss'))),
        work_dir=work_dir,
        train_dataloader=dict(
            batch_size=4, num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=True, seed=0),
            dataset=dict(**dataset, data_prefix='train', pipeline=[
                dict(type='LoadImageFromFile'), *(augmentation if augment else []),
                dict(type='PackInputs')])),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(
            type='AGCOptimWrapper', constructor='AGCOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=0.05, momentum=0.9, nesterov=True,
                           weight_decay=2e-5),
            clip_grad=dict(type='agc', clipping=0.01, eps=1e-3,
                           exclude=['head.fc.weight'])),
        param_scheduler=dict(type='LinearLR', start_factor=0.25, by_epoch=False, begin=0,
                             end=4),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmpretrain',
        randomness=dict(seed=0, deterministic=deterministic),
        # unique, so runners built within one second do not share a MessageHub
        experiment_name=f'{osp.basename(work_dir)}_{uuid.uuid4().hex[:8]}',
        log_level='WARNING')
    if val_interval is not None:
        cfg['train_cfg']['val_interval'] = val_interval
        cfg.update(
            val_dataloader=dict(
                batch_size=6, num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=False),
                dataset=dict(**dataset, data_prefix='val', pipeline=[
                    dict(type='LoadImageFromFile'), dict(type='PackInputs')])),
            val_evaluator=dict(type='Accuracy', topk=(1, )),
            val_cfg=dict())
    if custom_hooks is not None:
        cfg['custom_hooks'] = custom_hooks
    return cfg
