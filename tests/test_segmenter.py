"""Images in every mode, the inference protocol's geometry, the labelling rules, and the image-side cache."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scclip_core import (
    CalibrationParams,
    InputError,
    LabelRules,
    PatchLocation,
    Segmenter,
    SegmenterConfig,
    Stages,
    TextEmbeddingCache,
    Variant,
    Vocabulary,
    assign_labels,
    probe_size,
    to_rgb_array,
)
from scclip_core import images as images_module
from scclip_core import segmenter as segmenter_module
from scclip_core.scores import AxisResampling, PixelScores, class_probabilities, label_dtype
from scclip_core.segmenter import locate_patch, resized_shape, sliding_windows, window_boxes


@pytest.fixture(scope="module")
def segmenter(tiny_model):
    return Segmenter(tiny_model, SegmenterConfig(templates="simple"))


def _photo(height=120, width=160, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("out_size, in_size", [(224, 14), (375, 336), (100, 336), (7, 7), (1, 5), (5, 1)])
def test_axis_resampling_equals_torch_interpolate(out_size, in_size):
    signal = torch.randn(1, 1, in_size, 3)
    expected = F.interpolate(signal, size=(out_size, 3), mode="bilinear", align_corners=False)[0, 0]
    axis = AxisResampling.bilinear(out_size, in_size, torch.device("cpu"))
    resampled = torch.lerp(signal[0, 0, axis.low], signal[0, 0, axis.high], axis.weight.view(-1, 1))
    assert torch.allclose(resampled, expected, atol=1e-5)


def _random_scores(queries=5, classes=4, size=(9, 13), seed=0) -> PixelScores:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.rand(queries, *size, generator=generator) * 0.2
    query_classes = torch.tensor([index % classes for index in range(queries)])
    return PixelScores(logits, query_classes, classes)


def _full_resolution_probs(scores: PixelScores, size, logit_scale: float) -> torch.Tensor:
    upsampled = F.interpolate(scores.logits[None], size=size, mode="bilinear", align_corners=False)[0]
    return class_probabilities(upsampled, scores.query_classes, scores.num_classes, logit_scale)


@pytest.mark.parametrize("rows_per_band", [1, 3, 1000])
@pytest.mark.parametrize("rules", [LabelRules(), LabelRules(0.3), LabelRules(0.0, 0.2, 30.0), LabelRules(0.4, 0.25)])
def test_banded_labels_equal_labels_from_full_resolution_probabilities(monkeypatch, rows_per_band, rules):
    scores = _random_scores(queries=7, classes=5)
    size = (40, 57)
    monkeypatch.setattr(PixelScores, "band_rows", lambda self, width: rows_per_band)
    full = _full_resolution_probs(scores, size, rules.logit_scale)
    expected = assign_labels(full, 4, rules).numpy()
    assert np.array_equal(scores.labels(size, 4, rules), expected)
    assert np.allclose(scores.probabilities(size, rules.logit_scale), full.numpy(), atol=1e-5)


def test_area_rule_moves_pixels_of_small_classes_to_their_next_best_class():
    logits = torch.zeros(3, 1, 20)
    logits[0] = 0.5
    logits[1, 0, :2] = 0.9
    logits[2] = 0.4
    scores = PixelScores(logits, torch.arange(3), 3)
    labels = scores.labels((1, 20), 2, LabelRules(area_threshold=0.1))
    assert labels.tolist() == [[0] * 20]
    assert scores.labels((1, 20), 2, LabelRules(area_threshold=0.05)).tolist() == [[1, 1] + [0] * 18]


def test_label_type_grows_with_the_number_of_classes():
    assert label_dtype(256) == np.uint8 and label_dtype(257) == np.uint16 and label_dtype(70000) == np.uint32


def test_resize_follows_the_keep_ratio_rule():
    assert resized_shape(375, 500, 336, 2048) == (336, 448)
    assert resized_shape(336, 448, 336, 2048) == (336, 448)
    assert resized_shape(100, 10000, 336, 2048) == (20, 2048)
    assert resized_shape(1, 1, 336, 2048) == (336, 336)
    assert resized_shape(123, 456, None, 2048) == (123, 456)


def test_sliding_windows_cover_the_image_and_stay_inside():
    windows = sliding_windows(336, 448, 224, 112)
    assert len(windows) == 6
    assert windows[-1] == (112, 224, 336, 448)
    assert all(y1 - y0 == 224 and x1 - x0 == 224 for y0, x0, y1, x1 in windows)
    assert sliding_windows(224, 224, 224, 112) == [(0, 0, 224, 224)]
    assert len(sliding_windows(560, 1120, 224, 112)) == 4 * 9


def test_class_probabilities_softmax_over_queries_then_max_over_synonyms():
    logits = torch.tensor([0.30, 0.25, 0.10, 0.28]).view(4, 1, 1)
    probs = class_probabilities(logits, torch.tensor([0, 0, 1, 2]), 4, logit_scale=40.0)
    query = torch.softmax(40 * logits.flatten(), 0)
    assert torch.allclose(probs.flatten(), torch.tensor([query[0], query[2], query[3], 0.0]))


def test_probability_threshold_sends_unsure_pixels_to_background():
    probs = torch.tensor([[0.6, 0.3], [0.3, 0.3], [0.1, 0.4]]).view(3, 1, 2)
    assert assign_labels(probs, 2).flatten().tolist() == [0, 2]
    assert assign_labels(probs, 2, LabelRules(prob_threshold=0.5)).flatten().tolist() == [0, 2]
    assert assign_labels(probs, 1, LabelRules(prob_threshold=0.5)).flatten().tolist() == [0, 1]


def test_area_threshold_drops_small_classes_before_the_argmax():
    probs = torch.zeros(3, 1, 20)
    probs[0, 0, :] = 0.5
    probs[1, 0, :2] = 0.9
    probs[2, 0, :] = 0.4
    labels = assign_labels(probs, 2, LabelRules(area_threshold=0.1))
    assert labels.flatten().tolist() == [0] * 20
    probs[1, 0, :3] = 0.9
    assert assign_labels(probs, 2, LabelRules(area_threshold=0.1)).flatten().tolist()[:3] == [1, 1, 1]
    with pytest.raises(InputError, match="need a background class"):
        assign_labels(probs, None, LabelRules(prob_threshold=0.2))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"prob_threshold": 1.5}, r"prob_threshold must be in \[0, 1\], not 1.5"),
        ({"prob_threshold": -0.1}, r"prob_threshold must be in \[0, 1\], not -0.1"),
        ({"prob_threshold": float("nan")}, r"prob_threshold must be a finite number in \[0, 1\], not nan"),
        ({"area_threshold": 2}, r"area_threshold must be in \[0, 1\], not 2"),
        ({"area_threshold": "big"}, r"area_threshold must be a finite number in \[0, 1\], not 'big'"),
        ({"logit_scale": 0}, r"logit_scale must be in \(0, inf\), not 0"),
        ({"logit_scale": True}, r"logit_scale must be a finite number in \(0, inf\), not True"),
    ],
)
def test_label_rules_refuse_bad_values_with_their_name(values, message):
    with pytest.raises(InputError, match=message):
        LabelRules(**values)


def test_label_rules_say_when_they_need_a_background():
    assert not LabelRules().needs_background and not LabelRules(area_threshold=0.0).needs_background
    assert LabelRules(prob_threshold=0.1).needs_background and LabelRules(area_threshold=0.1).needs_background


def test_stitching_and_resizing_put_each_class_where_its_embedding_is(segmenter):
    embedding = segmenter.set_image(_photo(200, 300))
    text = segmenter.text.embed(["cat", "dog"])
    height, width = embedding.resized_size
    planted = torch.empty_like(embedding.embeddings)
    for index, (_, x0, _, x1) in enumerate(embedding.windows):
        columns = x0 + (torch.arange(planted.shape[2]) + 0.5) * (x1 - x0) / planted.shape[2]
        planted[index] = torch.where((columns < width / 2).view(1, -1, 1), text[0], text[1])
    embedding.embeddings = planted
    result = segmenter.predict(Vocabulary((("cat",), ("dog",))), embedding=embedding)
    assert result.labels.shape == (200, 300)
    assert (result.labels[:, :140] == 0).all() and (result.labels[:, 160:] == 1).all()
    assert result.probs.shape == (2, 200, 300) and result.probs_size == (200, 300) and result.probs_note is None
    assert np.allclose(result.probs.sum(0), 1.0, atol=1e-5)


def test_new_classes_and_thresholds_reuse_the_image_side(segmenter, monkeypatch):
    image = _photo(seed=3)
    first = segmenter.segment(image, "cat; dog", background=None)
    calls = []
    original = segmenter_module.encode_dense_variants
    monkeypatch.setattr(segmenter_module, "encode_dense_variants", lambda *a, **k: calls.append(1) or original(*a, **k))
    second = segmenter.segment(image, "bird; tree; car", rules=LabelRules(prob_threshold=0.4))
    assert not calls
    assert second.class_names == ["bird", "tree", "car", "background"]
    relabelled = first.with_thresholds(0.99)
    assert relabelled.class_names == ["cat", "dog", "background"] and (relabelled.labels == 2).all()
    segmenter.segment(image, "cat", stages=Stages.without("anomaly"))
    assert calls


@pytest.mark.parametrize(
    "rules", [LabelRules(0.3), LabelRules(0.2, 0.3), LabelRules(0.0, None, 25.0), LabelRules(0.34, 0.2, 60.0)]
)
@pytest.mark.parametrize("background", [None, ("sky",)])
def test_predict_and_relabelling_give_the_same_labels_for_the_same_rules(segmenter, rules, background):
    embedding = segmenter.embed_image(_photo(seed=4))
    plain = segmenter.predict("cat; dog; tree", embedding=embedding, background=background)
    direct = segmenter.predict("cat; dog; tree", embedding=embedding, background=background, rules=rules)
    relabelled = plain.with_rules(rules)
    assert relabelled.rules == direct.rules == rules and relabelled.class_names == direct.class_names
    assert np.array_equal(relabelled.labels, direct.labels)
    assert np.allclose(relabelled.probs, direct.probs, atol=1e-6)
    if rules.logit_scale == LabelRules().logit_scale:
        same = plain.with_thresholds(rules.prob_threshold, rules.area_threshold)
        assert same.rules == rules and np.array_equal(same.labels, direct.labels)
    assert direct.to_json()["prob_threshold"] == rules.prob_threshold


def test_image_side_keys_decide_reuse_and_embed_image_remembers_nothing(segmenter):
    image, other = _photo(seed=8), _photo(seed=9)
    remembered = segmenter.set_image(image)
    key = segmenter.image_key(image)
    assert remembered.key == key and remembered.serves(key) and not remembered.serves(key, trace=True)
    assert (key.variant, key.params, key.model_key) == (Variant(), CalibrationParams(), segmenter.model.key)
    assert segmenter.image_key(image.copy()) == key, "the key follows the pixels, not the array object"
    assert segmenter.image_key(image, stages=Stages.without("anomaly")) != key
    assert segmenter.image_key(image, method="naclip") != key
    assert segmenter.image_key(image, params=CalibrationParams(beta=0.5)) != key
    assert segmenter.image_key(other) != key
    fresh = segmenter.embed_image(other)
    assert fresh.key == segmenter.image_key(other) and fresh.grid == tuple(fresh.embeddings.shape[1:3])
    assert segmenter.set_image(image) is remembered, "embed_image left the remembered image side alone"
    assert segmenter.predict("cat", embedding=fresh).image is other
    assert segmenter.predict("cat").image is image
    assert Segmenter(segmenter.model, segmenter.config).embed_image(image).key == key


def test_window_geometry_in_input_pixels_with_known_answers():
    windows = [(0, 0, 224, 224), (0, 112, 224, 336), (0, 224, 224, 448)]
    boxes = window_boxes(windows, (224, 448), (100, 200))
    assert boxes == [(0, 0, 100, 100), (0, 50, 100, 150), (0, 100, 100, 200)]
    assert window_boxes([(0, 0, 224, 224)], (150, 100), (300, 200)) == [(0, 0, 448, 448)], "padded past the image"
    assert window_boxes([(0, 0, 1, 1)], (100, 100), (10, 10)) == [(0, 0, 1, 1)], "never empty"
    canvas, image = (224, 448), (100, 200)
    assert locate_patch(windows, canvas, image, (14, 14), x=10, y=95) == PatchLocation(0, 13, 1, 13 * 14 + 1)
    assert locate_patch(windows, canvas, image, (14, 14), x=140, y=5) == PatchLocation(2, 0, 5, 5), "nearest centre"
    assert locate_patch(windows, canvas, image, (14, 14), x=80, y=50) == PatchLocation(1, 7, 4, 7 * 14 + 4)
    assert locate_patch(windows, canvas, image, (14, 14), x=199, y=99) == PatchLocation(2, 13, 13, 14 * 14 - 1)
    with pytest.raises(InputError, match="outside the 200x100 image"):
        locate_patch(windows, canvas, image, (14, 14), x=200, y=50)
    two = [(0, 0, 100, 100), (0, 50, 100, 150)]
    assert locate_patch(two, (100, 150), (100, 150), (10, 10), x=10, y=95) == PatchLocation(0, 9, 1, 91)
    assert locate_patch(two, (100, 150), (100, 150), (10, 10), x=110, y=50).window == 1


def test_a_segmentation_locates_patches_on_its_own_layout(tiny_model):
    wide = Segmenter(tiny_model, SegmenterConfig(short_side=224, templates="simple"))
    result = wide.segment(_photo(100, 200), "cat; dog", trace=True)
    assert result.resized_size == (224, 448) and result.grid == (14, 14) == result.trace[0].grid
    assert result.window_boxes() == [(0, 0, 100, 100), (0, 50, 100, 150), (0, 100, 100, 200)]
    assert result.locate_patch(140, 5) == PatchLocation(2, 0, 5, 5)
    assert result.locate_patch(80, 50) == PatchLocation(1, 7, 4, 102)


def test_trace_covers_every_window(segmenter):
    result = segmenter.segment(_photo(300, 500), "cat; dog", trace=True)
    assert len(result.trace) == len(result.windows) == 8
    assert [crop.window for crop in result.trace] == result.windows
    assert result.to_json()["windows"] == 8


def test_whole_image_mode_pads_to_the_patch_grid(tiny_model):
    whole = Segmenter(tiny_model, SegmenterConfig(stride=None, short_side=None, templates="simple"))
    result = whole.segment(_photo(70, 130), "cat; dog", trace=True)
    assert result.windows == [(0, 0, 80, 144)]
    assert result.trace[0].grid == (5, 9)
    assert result.labels.shape == (70, 130)
    with pytest.raises(InputError, match="whole-image mode"):
        whole.segment(np.zeros((1500, 1500, 3), np.uint8), "cat")


def _encoded(image: Image.Image, format: str, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    buffer.seek(0)
    return Image.open(buffer)


def _odd_images():
    rgb = Image.fromarray(_photo(40, 60))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    sixteen = Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 27).astype(np.uint16))
    return {
        "RGBA": rgba,
        "LA": rgb.convert("LA"),
        "L": rgb.convert("L"),
        "1": rgb.convert("1"),
        "P": palette,
        "I;16": sixteen,
        "I": rgb.convert("I"),
        "F": rgb.convert("F"),
        "CMYK": rgb.convert("CMYK"),
        "YCbCr": rgb.convert("YCbCr"),
        "PNG 16-bit": _encoded(sixteen, "PNG"),
        "JPEG CMYK": _encoded(rgb.convert("CMYK"), "JPEG"),
    }


@pytest.mark.parametrize("mode", list(_odd_images()))
def test_images_in_any_mode_become_rgb(mode):
    rgb = to_rgb_array(_odd_images()[mode])
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    if mode == "RGBA":
        assert (rgb == 255).all()
    if mode in ("I;16", "PNG 16-bit"):
        assert rgb.max() > 200 and rgb.min() == 0


def test_exif_orientation_is_applied():
    image = Image.fromarray(_photo(40, 60))
    exif = image.getexif()
    exif[0x0112] = 6
    rotated = _encoded(image, "JPEG", exif=exif)
    assert to_rgb_array(rotated).shape == (60, 40, 3)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((5, 5), dtype=np.uint16) + 40000,
        np.random.rand(10, 12).astype(np.float32),
        np.ones((4, 4, 1), dtype=bool),
        np.zeros((6, 7, 4), dtype=np.uint8),
        np.full((3, 3, 3), 1000.0),
    ],
)
def test_arrays_of_any_dtype_become_rgb(array):
    rgb = to_rgb_array(array)
    assert rgb.shape == (*array.shape[:2], 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize("bad", [None, np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 5)), "not an image", 42])
def test_bad_images_get_a_clear_message(bad, tmp_path):
    if isinstance(bad, str):
        path = tmp_path / "fake.jpg"
        path.write_text("hello")
        bad = path
    with pytest.raises(InputError):
        to_rgb_array(bad)


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_photo()).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError):
        to_rgb_array(path)
    with pytest.raises(InputError, match="not found"):
        to_rgb_array(tmp_path / "missing.png")


def test_the_header_gives_the_upright_size_and_refuses_before_decoding(tmp_path, monkeypatch):
    rotated, plain, fake = tmp_path / "rotated.jpg", tmp_path / "plain.png", tmp_path / "fake.jpg"
    picture = Image.fromarray(_photo(40, 60))
    exif = picture.getexif()
    exif[0x0112] = 6
    picture.save(rotated, exif=exif)
    Image.new("L", (300, 200)).save(plain)
    fake.write_text("hello")

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixel data was decoded")

    with monkeypatch.context() as patched:
        patched.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
        assert probe_size(rotated) == (40, 60) and probe_size(plain) == (300, 200)
        with pytest.raises(InputError, match=r"the image is 300x200 \(0 megapixels\); the limit is 0 megapixels"):
            probe_size(plain, max_pixels=50_000)
        with pytest.raises(InputError, match=r"could not read the file as an image \(fake.jpg: UnidentifiedImage"):
            probe_size(fake)
        with pytest.raises(InputError, match="not found"):
            probe_size(tmp_path / "missing.png")
    monkeypatch.setattr(images_module, "MAX_READ_PIXELS", 50_000)
    with pytest.raises(InputError, match="the image is 300x200"):
        to_rgb_array(Image.new("RGB", (300, 200)))


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 3000, 3), (2500, 30, 3), (2100, 900)])
def test_segmenter_on_tiny_wide_tall_and_huge_images(segmenter, shape):
    image = np.full(shape, 128, dtype=np.uint8)
    result = segmenter.segment(image, "cat; dog", rules=LabelRules(prob_threshold=0.3))
    expected = shape[:2]
    assert result.labels.shape == expected and result.probs.shape == (3, *expected)
    assert result.image.shape == (*expected, 3)
    assert any("downscaled" in notice for notice in result.notices) == (max(expected) > 2048)
    assert any("random" in notice for notice in result.notices) and result.is_random_weights


def test_json_summary_is_plain(segmenter):
    import json

    summary = segmenter.segment(_photo(), "cat; dog").to_json()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["classes"] == ["cat", "dog", "background"]
    assert summary["image_size"] == [160, 120]
    assert sum(summary["shares"].values()) == pytest.approx(1.0)


def test_segment_on_a_remembered_image_reports_only_the_time_it_spent(tiny_model) -> None:
    segmenter = Segmenter(tiny_model, SegmenterConfig(templates="simple"))
    image = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    first = segmenter.segment(image, "cat; dog")
    assert not first.image_side_reused and {"preprocess", "backbone"} <= set(first.timings)
    again = segmenter.segment(image, "sky; road")
    assert again.image_side_reused and again.to_json()["image_side_reused"] is True
    assert not {"preprocess", "backbone"} & set(again.timings) and {"text", "logits"} <= set(again.timings)
    assert again.timings["total"] == pytest.approx(sum(v for k, v in again.timings.items() if k != "total"))


def test_a_shared_text_encoder_must_be_of_the_same_model_and_templates(tiny_model) -> None:
    simple = Segmenter(tiny_model, SegmenterConfig(templates="simple"), text_cache=TextEmbeddingCache())
    assert Segmenter(tiny_model, SegmenterConfig(templates="simple"), text=simple.text).text is simple.text
    with pytest.raises(InputError, match="shared text encoder must be of this model and its 'openai' templates"):
        Segmenter(tiny_model, SegmenterConfig(templates="openai"), text=simple.text)
