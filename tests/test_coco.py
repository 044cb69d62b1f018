"""COCO export: the project's RLE against pycocotools' own, the COCO file of a run, and FiftyOne when installed."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from scclip_core import SegmenterConfig
from scclip_core.cli import main
from scclip_core.coco import CocoFile, category_ids, coco_annotations, coco_categories, encode_rle
from scclip_core.errors import InputError
from scclip_core.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny-test", "--weights", "random", "--templates", "simple"]
CLASSES = "cat; dog; bird"
CLASS_NAMES = ["cat", "dog", "bird"]


def _reference(mask: np.ndarray) -> dict:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = [np.ones((1, 1), bool), np.zeros((1, 1), bool), np.ones((7, 13), bool), np.zeros((13, 7), bool)]
    masks += [rng.random(shape) < share for shape in [(5, 3), (31, 17), (64, 65), (1, 200)] for share in (0.05, 0.5)]
    stripes = np.zeros((257, 129), bool)
    stripes[:, ::3] = True  # runs as long as a column: counts of several characters
    frame = np.ones((40, 50), bool)
    frame[1:-1, 1:-1] = False  # touches every border
    block = np.zeros((3000, 1000), bool)
    block[5:2990, 100:700] = True  # long runs and large deltas, both signs
    return [*masks, stripes, frame, block]


@pytest.mark.parametrize("index", range(len(_masks())))
def test_rle_is_byte_for_byte_what_pycocotools_writes(index):
    mask = _masks()[index]
    reference = _reference(mask)
    rle = encode_rle(mask)
    assert rle == {"size": [int(side) for side in reference["size"]], "counts": reference["counts"].decode()}
    assert np.array_equal(coco_mask.decode(rle).astype(bool), mask)


def _label_maps() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    quadrants = np.zeros((9, 11), np.int64)
    quadrants[:4, 5:] = 1
    quadrants[4:, :5] = 3  # class 2 is absent
    disc = np.zeros((101, 67), np.uint8)
    rows, columns = np.mgrid[:101, :67]
    disc[(rows - 50) ** 2 + (columns - 33) ** 2 < 30**2] = 2
    many = rng.integers(0, 300, (37, 41)).astype(np.uint16)
    many[many == 7] = 8  # class 7 is absent
    return [
        np.zeros((1, 1), np.uint8),
        np.full((1, 1), 3, np.uint8),
        quadrants,
        disc,
        rng.integers(0, 4, (23, 19)).astype(np.uint8),
        many,
    ]


@pytest.mark.parametrize("index", range(len(_label_maps())))
def test_each_class_decodes_to_exactly_its_pixels_with_pycocotools_area_and_box(index):
    labels = _label_maps()[index]
    names = [f"class {number}" for number in range(max(int(labels.max()) + 1, 4))]
    annotations = coco_annotations(labels, names, image_id=7, first_annotation_id=11)
    present = np.unique(labels)
    assert [annotation["category_id"] for annotation in annotations] == [int(value) + 1 for value in present]
    assert [annotation["id"] for annotation in annotations] == list(range(11, 11 + len(present)))
    for annotation in annotations:
        mask = labels == annotation["category_id"] - 1
        rle = annotation["segmentation"]
        assert np.array_equal(coco_mask.decode(rle).astype(bool), mask)
        assert rle["counts"] == _reference(mask)["counts"].decode()
        assert annotation["area"] == int(coco_mask.area(rle)) == int(mask.sum())
        assert annotation["bbox"] == coco_mask.toBbox(rle).tolist()
        assert annotation["image_id"] == 7 and annotation["iscrowd"] == 1


def test_a_class_touching_the_borders_has_the_whole_image_as_its_box():
    labels = np.zeros((6, 9), np.uint8)
    labels[0, 3] = labels[5, 0] = labels[2, 8] = 1
    (first, second) = coco_annotations(labels, ["sky", "cat"], 1, 1)
    assert second["bbox"] == [0, 0, 9, 6] and second["area"] == 3
    assert first["area"] == 6 * 9 - 3


def test_categories_put_background_last_and_annotations_follow_them():
    names = ["cat", "background", "dog"]
    assert category_ids(3, 1) == [1, 3, 2]
    assert [(c["id"], c["name"]) for c in coco_categories(names, 1)] == [(1, "cat"), (2, "dog"), (3, "background")]
    labels = np.array([[0, 1, 2, 1]])
    by_category = {a["category_id"]: a for a in coco_annotations(labels, names, 1, 1, background_index=1)}
    assert by_category[3]["area"] == 2 and by_category[3]["bbox"] == [1, 0, 3, 1]
    assert by_category[2]["bbox"] == [2, 0, 1, 1]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([[0, 5]]), "do not fit 3 classes"),
        (np.array([[-1, 0]]), "do not fit 3 classes"),
        (np.zeros((2, 2, 2), np.uint8), "2-D integer"),
        (np.zeros((2, 2), np.float32), "2-D integer"),
        (np.zeros((0, 4), np.uint8), "2-D integer"),
    ],
)
def test_label_maps_that_do_not_fit_the_classes_are_refused(labels, message):
    with pytest.raises(InputError, match=message):
        coco_annotations(labels, ["a", "b", "c"], 1, 1)


def test_a_coco_file_gathers_images_and_pycocotools_loads_it(tmp_path):
    coco_file = CocoFile(["cat", "dog", "background"], background_index=2)
    first, second = _label_maps()[2] % 3, _label_maps()[4] % 3
    assert coco_file.add(first, "a.png") == 1
    assert coco_file.add(second, "b.png") == 2
    with pytest.raises(InputError, match="already"):
        coco_file.add(first, "c.png", image_id=2)
    assert coco_file.add(first, "c.png", image_id=10) == 10
    path = coco_file.write(tmp_path / "coco.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.json"]  # nothing left beside it
    dataset = COCO(str(path))
    assert [dataset.imgs[i]["file_name"] for i in (1, 2, 10)] == ["a.png", "b.png", "c.png"]
    assert len({annotation["id"] for annotation in dataset.dataset["annotations"]}) == len(dataset.anns)
    for image_id, labels in ((1, first), (2, second), (10, first)):
        assert (dataset.imgs[image_id]["height"], dataset.imgs[image_id]["width"]) == labels.shape
        for annotation in dataset.loadAnns(dataset.getAnnIds(imgIds=[image_id])):
            assert np.array_equal(dataset.annToMask(annotation).astype(bool), labels == annotation["category_id"] - 1)


def test_segmentation_to_coco_is_a_one_image_dataset_of_its_labels(tiny_model):
    segmenter = Segmenter(tiny_model, SegmenterConfig(templates="simple"))
    image = np.random.default_rng(2).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    result = segmenter.segment(image, CLASSES)
    dataset = result.to_coco(image_id=5)
    assert dataset["images"] == [{"id": 5, "file_name": "image.png", "height": 45, "width": 70}]
    names = {category["id"]: category["name"] for category in dataset["categories"]}
    assert list(names.values()) == result.class_names  # background is already last
    assert sum(annotation["area"] for annotation in dataset["annotations"]) == 45 * 70
    for annotation in dataset["annotations"]:
        index = result.class_names.index(names[annotation["category_id"]])
        assert np.array_equal(coco_mask.decode(annotation["segmentation"]).astype(bool), result.labels == index)
    with pytest.raises(InputError, match="classes"):
        CocoFile(["other"]).add(result, "x.png")


@pytest.fixture
def folder(tmp_path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for name, (height, width) in (("a.png", (64, 96)), ("b.jpg", (57, 83)), ("c.png", (90, 61))):
        image = np.zeros((height, width, 3), np.uint8)  # colour blocks, so that even random weights give classes
        image[:, : width // 2] = (255, 0, 0)
        image[:, width // 2 :] = (0, 0, 255)
        image[height // 3 : 2 * height // 3, width // 4 : 3 * width // 4] = (0, 255, 0)
        Image.fromarray(image).save(images / name)
    return images


def _check_against_label_maps(coco_path: Path, out: Path, names: list[str]) -> COCO:
    dataset = COCO(str(coco_path))
    assert [image["file_name"] for image in dataset.dataset["images"]] == names
    for image in dataset.dataset["images"]:
        labels = np.asarray(Image.open(out / f"{Path(image['file_name']).stem}.png"))
        annotations = dataset.loadAnns(dataset.getAnnIds(imgIds=[image["id"]]))
        assert sum(annotation["area"] for annotation in annotations) == labels.size
        for annotation in annotations:
            assert np.array_equal(dataset.annToMask(annotation).astype(bool), labels == annotation["category_id"] - 1)
    return dataset


def test_a_folder_run_writes_one_coco_file_that_lists_every_image_after_a_resume(folder, tmp_path, capsys):
    out, coco_path = tmp_path / "out", tmp_path / "masks.json"
    arguments = ["segment", str(folder), *TINY, "--classes", CLASSES, "--out", str(out), "--coco", str(coco_path)]
    assert main([*arguments, "--no-background"]) == 0
    masks = _check_against_label_maps(coco_path, out, ["a.png", "b.jpg", "c.png"])
    assert [c["name"] for c in masks.dataset["categories"]] == ["cat", "dog", "bird"]
    assert len({annotation["category_id"] for annotation in masks.dataset["annotations"]}) > 1
    for path in out.iterdir():
        path.unlink()
    assert main(arguments) == 0
    first = _check_against_label_maps(coco_path, out, ["a.png", "b.jpg", "c.png"])
    assert [c["name"] for c in first.dataset["categories"]] == ["cat", "dog", "bird", "background"]
    (out / "b.png").unlink()
    capsys.readouterr()
    assert main(arguments) == 0
    assert "skipped 2 image" in capsys.readouterr().err
    again = _check_against_label_maps(coco_path, out, ["a.png", "b.jpg", "c.png"])
    assert again.dataset == first.dataset
    (out / "a.png").write_bytes(b"not a png")  # torn: the resume redoes it
    Image.fromarray(np.full((90, 61), 9, np.uint8)).save(out / "c.png")  # whole, but class 9 of 4: refused
    assert main(arguments) == 2
    assert f"label map {out / 'c.png'} cannot go into the COCO file" in capsys.readouterr().err
    assert json.loads(coco_path.read_text()) == first.dataset  # refused whole: the previous file stands
    (out / "c.png").unlink()
    assert main(arguments) == 0
    assert _check_against_label_maps(coco_path, out, ["a.png", "b.jpg", "c.png"]).dataset == first.dataset


def test_without_out_the_coco_file_comes_from_the_results_and_nothing_is_skipped(folder, tmp_path):
    coco_path = tmp_path / "masks.json"
    arguments = ["segment", str(folder / "*.png"), *TINY, "--classes", CLASSES, "--no-background"]
    assert main([*arguments, "--coco", str(coco_path), "--save-probs", str(tmp_path / "probs")]) == 0
    assert main([*arguments, "--out", str(tmp_path / "out")]) == 0
    _check_against_label_maps(coco_path, tmp_path / "out", ["a.png", "c.png"])
    one = tmp_path / "one.json"
    assert main(["segment", str(folder / "b.jpg"), *TINY, "--classes", CLASSES, "--coco", str(one)]) == 0
    assert [image["file_name"] for image in COCO(str(one)).dataset["images"]] == ["b.jpg"]


def test_inputs_sharing_a_file_name_are_refused_with_coco(folder, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.png").write_bytes((folder / "a.png").read_bytes())
    code = main(["segment", str(folder / "a.png"), str(other / "a.png"), *TINY, "--classes", CLASSES, "--coco", "x"])
    assert code == 2 and "same file name" in capsys.readouterr().err


def test_fiftyone_reads_each_mask_of_the_file(folder, tmp_path):
    """FiftyOne's COCO parser (what `COCODetectionDataset` imports with): its masks are the label map's pixels.

    `fo.Dataset.from_dir` itself also needs FiftyOne's MongoDB, which may not be installable where the tests run.
    """
    fiftyone_coco = pytest.importorskip("fiftyone.utils.coco")
    out, coco_path = tmp_path / "out", tmp_path / "masks.json"
    arguments = [*TINY, "--classes", CLASSES, "--no-background", "--out", str(out), "--coco", str(coco_path)]
    assert main(["segment", str(folder), *arguments]) == 0
    _, classes, _, images, annotations = fiftyone_coco.load_coco_detection_annotations(str(coco_path))
    assert [images[image_id]["file_name"] for image_id in sorted(images)] == ["a.png", "b.jpg", "c.png"]
    found = set()
    for image_id, objects in annotations.items():
        image = images[image_id]
        labels = np.asarray(Image.open(out / f"{Path(image['file_name']).stem}.png"))
        for coco_object in objects:
            detection = coco_object.to_detection((image["width"], image["height"]), classes, load_segmentation=True)
            left, top, width, height = (
                round(value * side) for value, side in zip(detection.bounding_box, (*labels.shape[::-1],) * 2)
            )
            crop = labels[top : top + height, left : left + width]
            assert np.array_equal(detection.mask.astype(bool), crop == CLASS_NAMES.index(detection.label))
            found.add(detection.label)
    assert len(found) > 1
