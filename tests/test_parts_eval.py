"""ProtoEval consistency and stability (Huang et al. 2023) on hand-built activation maps with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from protolib.data.synthetic import NUM_PARTS, make_parts_dataset, parts_of_class
from protolib.evaluation.protoeval import (
    add_protoeval_noise,
    consistency,
    consistency_percent,
    consistent_prototypes,
    default_half_box,
    part_marks,
    part_rates,
    prototype_stability,
    stability,
    stability_percent,
    upsampled_argmax,
)


def _peak_maps(peaks: list[list[tuple[int, int]]], size: int) -> np.ndarray:
    """(N, k, size, size) maps, one peak each at (row, col). Full-size maps make the upsampling an identity."""
    maps = np.zeros((len(peaks), len(peaks[0]), size, size), np.float32)
    for i, row in enumerate(peaks):
        for j, (r, c) in enumerate(row):
            maps[i, j, r, c] = 1.0
    return maps


def test_default_box_scales_cub_box():
    assert default_half_box(224) == 36 and default_half_box(112) == 18 and default_half_box(448) == 72


def test_argmax_matches_opencv_bicubic_and_breaks_ties_row_major():
    rng = np.random.default_rng(0)
    maps = rng.random((40, 3, 7, 7)).astype(np.float32)
    best = upsampled_argmax(maps, 224, chunk=32)  # chunks smaller than N * k
    for i, j in np.ndindex(40, 3):
        up = cv2.resize(maps[i, j], (224, 224), interpolation=cv2.INTER_CUBIC)
        assert tuple(best[i, j]) == np.unravel_index(up.argmax(), up.shape)
    assert tuple(upsampled_argmax(np.ones((1, 1, 7, 7)), 224)[0, 0]) == (0, 0)
    one_hot = np.zeros((1, 1, 7, 7), np.float32)
    one_hot[0, 0, 2, 5] = 1
    r, c = upsampled_argmax(torch.from_numpy(one_hot), 224)[0, 0]  # tensors accepted too
    assert r // 32 == 2 and c // 32 == 5  # the peak stays in its cell


def test_marks_use_an_inclusive_box_and_pixel_rounding():
    size, half = 112, 18
    # keypoints (x, y) around a peak at row 50, col 60
    kp = np.array(
        [
            [
                [78.0, 50.0],
                [79.0, 50.0],
                [60.0, 32.0],
                [60.0, 31.0],
                [78.4, 68.4],
                [78.5, 50.0],
                [60.0, 50.0],
                [np.nan, np.nan],
            ]
        ]
    )
    vis = np.array([[True, True, True, True, True, True, False, False]])
    marks = part_marks(_peak_maps([[(50, 60)]], size), kp, vis, size)  # half_box None -> 18 at 112 px
    assert marks.shape == (1, 1, 8) and marks.dtype == bool
    # edge +18 in, +19 out, -18 in, -19 out, 78.4 rounds in, 78.5 rounds out, hidden and absent never mark
    assert marks[0, 0].tolist() == [True, False, True, False, True, False, False, False]
    assert part_marks(_peak_maps([[(50, 60)]], size), kp, vis, size, half_box=half + 1)[0, 0, 1]


def test_marks_box_is_clipped_to_the_image():
    size = 112
    # peak at row 3, col 110: box rows [0, 21], cols [92, 112]
    kp = np.array([[[111.0, 0.0], [91.0, 0.0], [111.0, 21.0], [111.0, 22.0], [100.0, -1.0]]])
    vis = np.ones((1, 5), bool)  # the last one claims visibility outside the image: clipping excludes it
    marks = part_marks(_peak_maps([[(3, 110)]], size), kp, vis, size)
    assert marks[0, 0].tolist() == [True, False, True, False, False]


def test_marks_per_image_and_prototype():
    size = 224
    kp = np.array([[[20.0, 20.0], [200.0, 200.0]], [[200.0, 20.0], [20.0, 200.0]]])
    vis = np.ones((2, 2), bool)
    maps = _peak_maps([[(20, 20), (200, 200), (110, 110)], [(200, 20), (20, 200), (20, 200)]], size)
    marks = part_marks(maps, kp, vis, size)
    assert marks.shape == (2, 3, 2)
    assert marks[0].tolist() == [[True, False], [False, True], [False, False]]
    assert marks[1].tolist() == [[False, True], [True, False], [True, False]]
    with pytest.raises(ValueError):
        part_marks(maps, kp[:1], vis[:1], size)


def test_consistency_threshold_edge_is_inclusive():
    # 15 images, 3 prototypes, 2 parts always visible; 12/15 is exactly the 80% edge
    marks = np.zeros((15, 3, 2), bool)
    marks[:12, 0, 0] = True  # 12/15: consistent
    marks[:11, 1, 1] = True  # 11/15: not
    marks[:11, 2, 0] = marks[4:, 2, 1] = True  # 11/15 on each part: not
    vis = np.ones((15, 2), bool)
    assert consistent_prototypes(marks, vis).tolist() == [True, False, False]
    assert consistency(marks, vis) == pytest.approx(1 / 3)
    assert consistency(marks, vis, threshold=0.7) == 1.0


def test_consistency_counts_only_images_where_the_part_is_visible():
    marks = np.zeros((10, 3, 3), bool)
    vis = np.zeros((10, 3), bool)
    vis[:5, 0] = True  # part 0 visible in 5 images only
    vis[:, 1] = True  # part 1 always visible; part 2 never
    marks[:4, 0, 0] = True  # 4 of the 5 visible: 0.8 -> consistent (though only 4/10 of all images)
    marks[:, 1, 2] = True  # marks of a never-visible part do not count -> rate 0
    marks[:7, 2, 1] = True  # 0.7
    rates = part_rates(marks, vis)
    assert rates[0].tolist() == [0.8, 0.0, 0.0] and rates[1].tolist() == [0.0, 0.0, 0.0]
    assert rates[2, 1] == pytest.approx(0.7)
    assert consistent_prototypes(marks, vis).tolist() == [True, False, False]
    with pytest.raises(ValueError):
        consistency(marks[:0], vis[:0])


def test_consistency_percent_is_over_all_prototypes_of_all_classes():
    vis_a, vis_b = np.ones((5, 2), bool), np.ones((4, 2), bool)
    a = np.zeros((5, 3, 2), bool)
    a[:, 0, 0] = a[:, 1, 1] = True  # 2 of 3
    b = np.zeros((4, 2, 2), bool)
    b[:, 1, 0] = True  # 1 of 2
    assert consistency_percent([a, b], [vis_a, vis_b]) == pytest.approx(60.0)


def test_stability():
    clean = np.zeros((4, 2, 3), bool)
    clean[:, 0, 0] = clean[:, 1, 1] = True
    noisy = clean.copy()
    noisy[2, 1, 2] = True  # prototype 1 gains a part in one image of four
    assert prototype_stability(clean, noisy).tolist() == [1.0, 0.75]
    assert stability(clean, noisy) == pytest.approx(0.875)
    assert stability(clean, clean) == 1.0
    other = np.zeros((2, 2, 3), bool)
    other[0, :, 0] = True  # every mark of image 0 changes
    assert stability_percent([clean, other], [noisy, np.zeros_like(other)]) == pytest.approx(100 * 2.75 / 4)
    with pytest.raises(ValueError):
        stability(clean, noisy[:3])


def test_protoeval_noise():
    x = torch.zeros(50, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    state = torch.random.get_rng_state()
    noise = add_protoeval_noise(x, generator=g)
    assert torch.equal(torch.random.get_rng_state(), state)  # a given generator leaves the global RNG alone
    assert torch.equal(noise, add_protoeval_noise(x, generator=torch.Generator().manual_seed(0)))
    assert noise.abs().max() <= 0.25 and abs(noise.mean()) < 0.01
    # N(0, 0.2) clipped at 1.25 sigma: P(|z| > 1.25) = 0.211 of the values sit on the clip
    assert (noise.abs() == 0.25).float().mean() == pytest.approx(0.211, abs=0.01)
    assert noise.std() == pytest.approx(0.1628, abs=0.003)  # std of the clipped normal, worked out by hand
    assert add_protoeval_noise(x, clip=None, generator=g).abs().max() > 0.25
    assert add_protoeval_noise(x.double()).dtype == torch.float64


def test_oracle_maps_on_the_synthetic_benchmark():
    """Maps that peak on part j of the class are fully consistent and stable. Maps that peak at one
    random spot per image are not consistent."""
    size, classes = 112, 4
    samples = make_parts_dataset(15, seed=2, size=size, num_classes=classes)
    grid = (np.arange(14) + 0.5) * size / 14  # feature-cell centres, as at stride 8
    per_class_marks, per_class_vis, random_marks = [], [], []
    rng = np.random.default_rng(0)
    for label in range(classes):
        group = [s for s in samples if s.label == label]
        parts = parts_of_class(label)
        kp = np.stack([s.keypoints for s in group])
        vis = np.stack([s.visible for s in group])
        centres = np.nan_to_num(kp[:, parts])  # (N, k, 2): prototype j follows part j of the class
        maps = np.exp(
            -(
                (grid[None, None, None, :] - centres[..., 0:1, None]) ** 2
                + (grid[None, None, :, None] - centres[..., 1:2, None]) ** 2
            )
            / 60.0
        )
        per_class_marks.append(part_marks(maps, kp, vis, size))
        per_class_vis.append(vis)
        spots = rng.random((len(group), 1, 14, 14)).repeat(len(parts), axis=1)
        random_marks.append(part_marks(spots, kp, vis, size))
        assert per_class_marks[-1].shape == (len(group), len(parts), NUM_PARTS)
    assert consistency_percent(per_class_marks, per_class_vis) == 100.0
    assert stability_percent(per_class_marks, per_class_marks) == 100.0
    assert consistency_percent(random_marks, per_class_vis) < 50.0
