"""Tests for the synthetic demo data generator (tools/data/demo_data.py)."""
import importlib.util
import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest
from PIL import Image

import nfnets_mm  # noqa: F401  (registers the plugin)
# tools/data/demo_data.py (conftest puts tools/data on sys.path)
from demo_data import (CLS_CLASSES, COCO_CLASSES, COCO_DEFAULTS, DemoDataError,
                       ensure_demo_data, make_classification_demo, make_coco_demo,
                       validate_coco_annotations, validate_demo_data)

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..'))


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    """One default demo data set (seed 0), shared by the read-only tests."""
    root = str(tmp_path_factory.mktemp('demo') / 'demo')
    manifest = ensure_demo_data(root, seed=0)
    assert manifest['generated'] is True
    return root


def _hashes(root):
    with open(osp.join(root, 'manifest.json')) as f:
        return {k: v['sha256'] for k, v in json.load(f)['files'].items()}


def _mtimes(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            out[path] = os.stat(path).st_mtime_ns
    return out


def test_same_seed_is_byte_identical_other_seed_differs(demo_root, tmp_path):
    again = str(tmp_path / 'again')
    ensure_demo_data(again, seed=0)
    ref = _hashes(demo_root)
    assert _hashes(again) == ref
    # the manifest hashes are the real file contents
    for rel in ('cls/train/circle/000.png', 'coco/annotations/instances_val.json'):
        with open(osp.join(demo_root, rel), 'rb') as a, open(osp.join(again, rel), 'rb') as b:
            assert a.read() == b.read()
    other = str(tmp_path / 'seed1')
    files = make_classification_demo(other, seed=1)
    files.update(make_coco_demo(other, seed=1))
    assert set(files) == set(ref)
    pngs = [k for k in ref if k.endswith('.png')]
    assert sum(files[k]['sha256'] != ref[k] for k in pngs) == len(pngs)
    assert files['cls/classes.txt']['sha256'] == ref['cls/classes.txt']


def test_classification_layout_and_counts(demo_root):
    cls_root = osp.join(demo_root, 'cls')
    with open(osp.join(cls_root, 'classes.txt')) as f:
        assert tuple(f.read().split()) == CLS_CLASSES
    assert len(CLS_CLASSES) == 6
    for split, per_class in (('train', 60), ('val', 20)):
        assert sorted(os.listdir(osp.join(cls_root, split))) == sorted(CLS_CLASSES)
        for name in CLS_CLASSES:
            files = sorted(os.listdir(osp.join(cls_root, split, name)))
            assert len(files) == per_class and all(f.endswith('.png') for f in files)
        with open(osp.join(cls_root, 'meta', f'{split}.txt')) as f:
            lines = [ln.split() for ln in f.read().splitlines()]
        assert len(lines) == 6 * per_class
        for rel, label in lines:
            assert CLS_CLASSES[int(label)] == rel.split('/')[0]
            assert osp.isfile(osp.join(cls_root, split, rel))
    img = Image.open(osp.join(cls_root, 'val', 'triangle', '000.png'))
    assert img.mode == 'RGB' and img.size == (64, 64)
    # not a constant image: a shape over a noisy background
    assert np.asarray(img).std() > 5


def test_coco_layout_and_annotations(demo_root):
    coco_root = osp.join(demo_root, 'coco')
    all_image_ids = set()
    for split, num in (('train', COCO_DEFAULTS['num_train']),
                       ('val', COCO_DEFAULTS['num_val'])):
        with open(osp.join(coco_root, 'annotations', f'instances_{split}.json')) as f:
            data = json.load(f)
        assert [c['name'] for c in data['categories']] == list(COCO_CLASSES)
        assert len(data['images']) == num
        assert sorted(os.listdir(osp.join(coco_root, split))) == sorted(
            im['file_name'] for im in data['images'])
        per_image = {im['id']: 0 for im in data['images']}
        for ann in data['annotations']:
            per_image[ann['image_id']] += 1
            assert ann['iscrowd'] == 0 and ann['area'] > 0
            assert ann['bbox'][2] > 4 and ann['bbox'][3] > 4
            assert len(ann['segmentation'][0]) >= 6
        assert all(1 <= n <= 4 for n in per_image.values())
        all_image_ids |= set(per_image)
        img = Image.open(osp.join(coco_root, split, data['images'][0]['file_name']))
        assert img.mode == 'RGB' and img.size == (128, 128)
    assert len(all_image_ids) == COCO_DEFAULTS['num_train'] + COCO_DEFAULTS['num_val']
    validate_demo_data(demo_root)


def test_mmpretrain_custom_dataset_loads_both_ways(demo_root):
    from mmpretrain.datasets import CustomDataset
    cls_root = osp.join(demo_root, 'cls')
    scanned = CustomDataset(data_root=cls_root, data_prefix='train')
    annotated = CustomDataset(
        data_root=cls_root,
        ann_file='meta/train.txt',
        data_prefix='train',
        classes=osp.join(cls_root, 'classes.txt'))
    assert len(scanned) == len(annotated) == 360
    assert tuple(scanned.CLASSES) == tuple(annotated.CLASSES) == CLS_CLASSES
    by_path = {osp.normpath(d['img_path']): d['gt_label'] for d in scanned.load_data_list()}
    for d in annotated.load_data_list():
        assert by_path[osp.normpath(d['img_path'])] == d['gt_label']
    val = CustomDataset(data_root=cls_root, ann_file='meta/val.txt', data_prefix='val',
                        classes=osp.join(cls_root, 'classes.txt'),
                        pipeline=[dict(type='LoadImageFromFile')])
    sample = val[0]
    assert len(val) == 120 and sample['img'].shape == (64, 64, 3)


def test_mmdet_coco_dataset_loads(demo_root):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    ds = CocoDataset(
        data_root=osp.join(demo_root, 'coco'),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        metainfo=dict(classes=COCO_CLASSES),
        pipeline=[
            dict(type='mmdet.LoadImageFromFile'),
            dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='mmdet.PackDetInputs')
        ])
    assert len(ds) == COCO_DEFAULTS['num_train']
    with open(osp.join(demo_root, 'coco', 'annotations', 'instances_train.json')) as f:
        data = json.load(f)
    first = data['images'][0]
    anns = [a for a in data['annotations'] if a['image_id'] == first['id']]
    out = ds[0]
    inst = out['data_samples'].gt_instances
    assert tuple(out['inputs'].shape) == (3, 128, 128)
    assert len(inst) == len(anns) >= 1
    expected = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)])
    np.testing.assert_allclose(inst.bboxes.numpy(), expected, atol=1e-3)
    assert sorted(inst.labels.tolist()) == sorted(a['category_id'] - 1 for a in anns)
    masks = inst.masks.to_ndarray()
    assert masks.shape == (len(anns), 128, 128)
    for mask, box in zip(masks, expected):
        ys, xs = np.nonzero(mask)
        assert xs.size > 0
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1
        assert ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1


def _corrupt_copy(demo_root, tmp_path, edit):
    src = osp.join(demo_root, 'coco', 'annotations', 'instances_val.json')
    with open(src) as f:
        data = json.load(f)
    edit(data)
    dst = str(tmp_path / 'bad.json')
    with open(dst, 'w') as f:
        json.dump(data, f)
    return dst


def test_coco_validation_catches_corruption(demo_root, tmp_path):
    good = osp.join(demo_root, 'coco', 'annotations', 'instances_val.json')
    validate_coco_annotations(good, osp.join(demo_root, 'coco', 'val'))

    def move_mask_out_of_box(data):
        ann = data['annotations'][0]
        x, y, w, h = ann['bbox']
        dx = 40 if x + w + 40 < 128 else -40  # keep the polygon inside the image
        ann['segmentation'] = [[c + dx if i % 2 == 0 else c
                                for i, c in enumerate(ann['segmentation'][0])]]

    with pytest.raises(DemoDataError, match='outside its box'):
        validate_coco_annotations(_corrupt_copy(demo_root, tmp_path, move_mask_out_of_box))

    def empty_box(data):
        data['annotations'][1]['bbox'][2] = 0

    with pytest.raises(DemoDataError, match='degenerate box'):
        validate_coco_annotations(_corrupt_copy(demo_root, tmp_path, empty_box))

    def duplicate_image_id(data):
        data['images'][1]['id'] = data['images'][0]['id']

    with pytest.raises(DemoDataError, match='duplicate image ids'):
        validate_coco_annotations(_corrupt_copy(demo_root, tmp_path, duplicate_image_id))

    with pytest.raises(DemoDataError, match='cannot load'):
        bad = tmp_path / 'truncated.json'
        bad.write_text('{"images": [')
        validate_coco_annotations(str(bad))


def test_validate_demo_data_detects_modified_files(demo_root, tmp_path):
    copy = str(tmp_path / 'copy')
    shutil.copytree(demo_root, copy)
    validate_demo_data(copy)
    path = osp.join(copy, 'cls', 'val', 'circle', '003.png')
    Image.new('RGB', (64, 64)).save(path)
    with pytest.raises(DemoDataError, match='003.png'):
        validate_demo_data(copy)
    os.remove(path)
    with pytest.raises(DemoDataError, match='missing'):
        validate_demo_data(copy)


def test_second_call_is_a_noop(demo_root):
    before = _mtimes(demo_root)
    manifest = ensure_demo_data(demo_root, seed=0)
    assert manifest['generated'] is False
    assert _mtimes(demo_root) == before


def test_refuses_foreign_or_mismatching_folder(demo_root, tmp_path):
    foreign = tmp_path / 'foreign'
    (foreign / 'cls').mkdir(parents=True)
    user_file = foreign / 'cls' / 'my_notes.txt'
    user_file.write_text('keep me')
    with pytest.raises(DemoDataError, match='force'):
        ensure_demo_data(str(foreign), seed=0)
    assert user_file.read_text() == 'keep me'
    assert not (foreign / 'manifest.json').exists()

    # our own data, but another seed: refused too, nothing rewritten
    before = _mtimes(demo_root)
    with pytest.raises(DemoDataError, match='seed'):
        ensure_demo_data(demo_root, seed=3)
    assert _mtimes(demo_root) == before

    # force regenerates only what the generator owns
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'README').write_text('mine')
    (other / 'coco').mkdir()
    (other / 'coco' / 'junk.bin').write_bytes(b'x')
    with pytest.raises(DemoDataError):
        ensure_demo_data(str(other))
    manifest = ensure_demo_data(str(other), seed=0, force=True)
    assert manifest['generated'] is True
    assert (other / 'README').read_text() == 'mine'
    assert not (other / 'coco' / 'junk.bin').exists()
    assert _hashes(str(other)) == _hashes(demo_root)


def test_cli(demo_root, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'make_demo_data', osp.join(REPO, 'tools', 'data', 'make_demo_data.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(['--root', demo_root, '--seed', '0']) == 0
    assert 'nothing written' in capsys.readouterr().out
    assert cli.main(['--root', demo_root, '--seed', '5']) == 1
    assert '--force' in capsys.readouterr().err


def _age(root, generator='nfnets_mm.utils.demo_data', version=0):
    """Make ``root``'s manifest look written by an earlier generator release."""
    path = osp.join(root, 'manifest.json')
    with open(path) as f:
        manifest = json.load(f)
    manifest.update(generator=generator, version=version)
    with open(path, 'w') as f:
        json.dump(manifest, f)


def test_unmodified_copy_of_an_earlier_version_is_replaced(demo_root, tmp_path):
    """Data written by an earlier generator release (then package code, under another
    name) is ours and unchanged: it is regenerated without --force."""
    old = tmp_path / 'old'
    shutil.copytree(demo_root, old)
    _age(str(old))
    with pytest.warns(UserWarning, match='earlier generator version'):
        manifest = ensure_demo_data(str(old), seed=0)
    assert manifest['generated'] is True
    assert _hashes(str(old)) == _hashes(demo_root)


def test_modified_or_reseeded_copy_of_an_earlier_version_is_refused(demo_root, tmp_path):
    old = tmp_path / 'old'
    shutil.copytree(demo_root, old)
    _age(str(old))
    victim = next(p for p in sorted((old / 'cls' / 'train').rglob('*.png')))
    victim.write_bytes(b'user edit')
    with pytest.raises(DemoDataError, match='Refusing'):
        ensure_demo_data(str(old), seed=0)
    assert victim.read_bytes() == b'user edit'
    aged = tmp_path / 'aged'
    shutil.copytree(demo_root, aged)
    _age(str(aged))
    before = _hashes(str(aged))
    for kwargs in (dict(seed=1), dict(seed=0, cls_cfg=dict(num_val_per_class=3))):
        with pytest.raises(DemoDataError, match='Refusing'):
            ensure_demo_data(str(aged), **kwargs)
    assert _hashes(str(aged)) == before
