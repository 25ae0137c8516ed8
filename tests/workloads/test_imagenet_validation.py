"""ImageNet folders the reader must refuse or label by the union of both splits (issue 18).

On the JPEG fixture: a stray or empty class folder, a class missing from one split, a
class set that is not ImageNet-1k's, symlink loops, and undecodable images in the PIL
workers and behind DALI. Each refusal is one line naming the folder or file, a
`DataError` (a UserError, so `algoperf run` exits 2 before writing anything).
"""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from algoperf import registry
from algoperf.errors import DataError
from algoperf.runtime import Runtime
from tests.workloads.run_refusal import run_refused_line
from workloads.imagenet_resnet import input_pipeline as ip
from workloads.imagenet_resnet import loaders
from workloads.imagenet_resnet.fixture import WNIDS, write_imagenet_fixture


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / 'imagenet'
    write_imagenet_fixture(str(root), seed=7, num_classes=3, train_per_class=4, val_per_class=2)
    return root


def _one_line(error) -> str:
    message = str(error)
    assert '\n' not in message and 'Traceback' not in message, message
    return message


def test_stray_train_folder_is_refused_not_given_a_label(data_dir):
    (data_dir / 'train' / 'lost+found').mkdir()
    with pytest.raises(DataError, match=r'train/lost\+found: not a class folder') as e:
        ip.split_images('train', str(data_dir))
    _one_line(e.value)
    with pytest.raises(DataError, match=r'lost\+found'):
        ip.split_images('validation', str(data_dir))  # Both splits share the label list.
    wl = registry.get_workload('imagenet_resnet', runtime=Runtime(torch.device('cpu')))
    with pytest.raises(DataError, match=r'lost\+found'):
        wl.validate_data_dir(str(data_dir))


def test_empty_class_folder_is_refused(data_dir):
    (data_dir / 'train' / 'n01440000').mkdir()  # Sorts first: it would shift every label.
    with pytest.raises(DataError, match='n01440000: class folder holds no images') as e:
        ip.split_images('train', str(data_dir))
    _one_line(e.value)
    # A folder of non-images is as empty.
    shutil.rmtree(data_dir / 'train' / 'n01440000')
    (data_dir / 'val' / WNIDS[1] / 'notes.txt').write_text('x')
    for f in (data_dir / 'val' / WNIDS[1]).glob('*.JPEG'):
        f.unlink()
    with pytest.raises(DataError, match=f'val/{WNIDS[1]}: class folder holds no images'):
        ip.split_images('validation', str(data_dir))


def test_labels_come_from_the_union_of_both_splits(data_dir):
    shutil.rmtree(data_dir / 'val' / WNIDS[1])  # val lacks the middle class.
    val = ip.split_images('validation', str(data_dir))
    assert val.labels.tolist() == [0, 0, 2, 2]
    assert [os.path.basename(os.path.dirname(p)) for p in val.paths[2:]] == [WNIDS[2]] * 2
    shutil.rmtree(data_dir / 'train' / WNIDS[0])  # And train lacks the first class.
    train = ip.split_images('train', str(data_dir))
    assert train.labels.tolist() == [1] * 4 + [2] * 4
    assert ip.class_names(str(data_dir)) == list(WNIDS[:3])


def _thousand_classes(root, names):
    """`root/train/<name>/0.JPEG` for every name, hard links of one tiny JPEG."""
    jpeg = root / 'tiny.JPEG'
    Image.new('RGB', (8, 8), (200, 10, 10)).save(jpeg)
    for name in names:
        os.makedirs(root / 'train' / name)
        os.link(jpeg, root / 'train' / name / '0.JPEG')


def test_a_thousand_classes_must_be_imagenets_published_wnids(tmp_path):
    published = ip.published_wnids()
    assert len(published) == 1000 == len(set(published)) and list(published) == sorted(published)
    assert (published[0], published[281], published[999]) == ('n01440764', 'n02123045', 'n15075141')
    _thousand_classes(tmp_path, published)
    train = ip.split_images('train', str(tmp_path))
    assert train.labels[281] == 281 and train.paths[281].endswith('n02123045/0.JPEG')
    # A wnid-shaped folder that is not an ImageNet-1k class: 1,001 labels for 1,000 outputs.
    os.makedirs(tmp_path / 'train' / 'n00000001')
    os.link(tmp_path / 'tiny.JPEG', tmp_path / 'train' / 'n00000001' / '0.JPEG')
    with pytest.raises(DataError, match='n00000001: not one of ImageNet-1k') as e:
        ip.split_images('train', str(tmp_path))
    _one_line(e.value)
    # 1,000 folders with one replaced by a look-alike: refused too.
    shutil.rmtree(tmp_path / 'train' / published[5])
    with pytest.raises(DataError, match='n00000001: not one of ImageNet-1k'):
        ip.split_images('train', str(tmp_path))


def test_symlink_loops_and_links_to_another_class_are_refused(data_dir):
    class_dir = data_dir / 'train' / WNIDS[0]
    os.symlink('.', class_dir / 'loop')  # Followed, 4 images became 164 before the check.
    with pytest.raises(DataError, match=f'{WNIDS[0]}/loop: reaches the folder') as e:
        ip.split_images('train', str(data_dir))
    _one_line(e.value)
    os.unlink(class_dir / 'loop')
    os.symlink(f'../{WNIDS[0]}', data_dir / 'train' / WNIDS[1] / 'more')
    with pytest.raises(DataError, match=f'{WNIDS[1]}/more: reaches the folder'):
        ip.split_images('train', str(data_dir))
    # A symlinked class folder or sub-folder reached once is still read.
    os.unlink(data_dir / 'train' / WNIDS[1] / 'more')
    os.rename(class_dir, data_dir / 'elsewhere')
    os.symlink(data_dir / 'elsewhere', class_dir)
    assert ip.split_images('train', str(data_dir)).labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def _corrupt(data_dir) -> str:
    path = sorted((data_dir / 'train' / WNIDS[1]).glob('*.JPEG'))[2]
    path.write_bytes(path.read_bytes()[:200])  # Truncated inside the entropy-coded data.
    return str(path)


@pytest.mark.parametrize('workers', [0, 1])
def test_pil_decode_failure_names_the_file_even_from_a_worker(data_dir, workers):
    bad = _corrupt(data_dir)
    images = ip.split_images('train', str(data_dir))
    plan = iter([(0, np.arange(12))])
    with pytest.raises(DataError, match=f'{bad}: cannot decode image') as e:
        list(loaders.pil_batches(images, plan, True, 0, num_workers=workers))
    _one_line(e.value)


class _FakeDali:
    """Stands in for a built DALI pipeline: pulls one batch from the source, then fails."""

    def __init__(self, source, error):
        self.source, self.error = source, error

    def build(self):
        pass

    def run(self):
        self.source()
        raise self.error


def test_dali_decode_failure_names_the_file_and_other_errors_stand(data_dir, monkeypatch):
    bad = _corrupt(data_dir)
    images = ip.split_images('train', str(data_dir))
    error = RuntimeError('Critical error in pipeline:\nError in thread 0: nvJPEG error (6)')
    monkeypatch.setattr(loaders, 'build_dali_pipeline', lambda source, *a: _FakeDali(source, error))
    with pytest.raises(DataError, match=f'{bad}: cannot decode image.*DALI: Critical') as e:
        next(loaders.dali_batches(images, iter([(0, np.arange(12))]), 12, True, 0))
    _one_line(e.value)
    # Every image of the batch decodes: DALI failed for another reason, its error stands.
    with pytest.raises(RuntimeError, match='nvJPEG') as e:
        next(loaders.dali_batches(images, iter([(0, np.arange(4))]), 4, True, 0))
    assert not isinstance(e.value, DataError)
    # A file that cannot be read is named too.
    os.unlink(images.paths[1])
    with pytest.raises(DataError, match=f'{images.paths[1]}: cannot read image'):
        next(loaders.dali_batches(images, iter([(0, np.arange(4))]), 4, True, 0))


def test_run_exits_2_with_one_line_and_writes_nothing(data_dir, tmp_path, capsys):
    (data_dir / 'train' / 'lost+found').mkdir()
    line = run_refused_line('imagenet_resnet', data_dir, tmp_path, capsys, name='inet')
    assert 'lost+found' in line, line
