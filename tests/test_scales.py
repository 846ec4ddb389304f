"""The scale schedule: token layout, block-causal attention, and which φ serves each scale."""

from fractions import Fraction

import pytest
import torch

from nextscale.scales import SCHEDULES, ScaleSchedule, parse_patch_nums, phi_index_map


def test_256px_schedule_layout():
    schedule = ScaleSchedule.from_spec("256")
    assert schedule.patch_nums == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert schedule.lengths == (1, 4, 9, 16, 25, 36, 64, 100, 169, 256)
    assert schedule.offsets == (0, 1, 5, 14, 30, 55, 91, 155, 255, 424, 680)
    assert schedule.total_length == 680
    assert schedule.num_scales == 10 and schedule.final_side == 16 and schedule.first_length == 1
    assert schedule.span(0) == (0, 1) and schedule.span(9) == (424, 680)


def test_512px_schedule_layout():
    schedule = ScaleSchedule.from_spec("512")
    assert schedule.patch_nums == (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
    assert schedule.offsets == (0, 1, 5, 14, 30, 66, 147, 316, 640, 1216, 2240)
    assert schedule.total_length == 2240
    assert schedule.span(9) == (1216, 2240)


def test_1024px_schedule_length_is_the_sum_of_squares():
    schedule = ScaleSchedule.from_spec("1024")
    assert schedule.num_scales == 14
    assert schedule.total_length == sum(p * p for p in SCHEDULES["1024"]) == 9451


def test_level_ids_mark_each_token_with_its_scale():
    schedule = ScaleSchedule((1, 2, 3))
    assert schedule.level_ids().tolist() == [0] + [1] * 4 + [2] * 9
    assert schedule.level_ids().dtype == torch.int64


@pytest.mark.parametrize("spec", ["1_2_3_4", "256"])
def test_attention_mask_is_block_causal(spec):
    """Query scale a sees key scale b exactly when b ≤ a: the whole block, including its own scale (bidirectional)."""
    schedule = ScaleSchedule.from_spec(spec)
    mask = schedule.attention_mask()
    L = schedule.total_length
    assert mask.shape == (L, L) and mask.dtype == torch.bool
    for a in range(schedule.num_scales):
        qa, qb = schedule.span(a)
        for b in range(schedule.num_scales):
            ka, kb = schedule.span(b)
            block = mask[qa:qb, ka:kb]
            assert bool(block.all()) if b <= a else not bool(block.any()), f"query scale {a}, key scale {b}"
    visible = sum(length * schedule.offsets[k + 1] for k, length in enumerate(schedule.lengths))
    assert int(mask.sum()) == visible


def test_phi_mapping_of_four_shared_convs():
    assert phi_index_map(10, 4) == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)
    assert phi_index_map(4, 4) == (0, 1, 2, 3)
    assert phi_index_map(5, 4) == (0, 1, 2, 2, 3)
    assert ScaleSchedule.from_spec("256").phi_indices(4) == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)


def test_phi_mapping_follows_float64_not_exact_ties():
    """Scales 2 and 7 of 10 are exactly halfway between two ticks; exact arithmetic with first-index ties would give
    φ0 and φ2 there, the official float64 rounding gives φ1 and φ3 (and the released checkpoints are trained so)."""
    ticks = [Fraction(1, 12) + Fraction(10, 12) * Fraction(k, 3) for k in range(4)]
    exact = []
    for s in range(10):
        distances = [abs(t - Fraction(s, 9)) for t in ticks]
        exact.append(distances.index(min(distances)))
    assert exact == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    differs = [s for s, (e, f) in enumerate(zip(exact, phi_index_map(10, 4))) if e != f]
    assert differs == [2, 7]


def test_phi_mapping_for_one_and_per_scale_convs():
    assert phi_index_map(10, 1) == (0,) * 10
    assert phi_index_map(10, 10) == tuple(range(10))
    assert phi_index_map(4, 4) == tuple(range(4))
    with pytest.raises(ValueError):
        phi_index_map(10, 0)


def test_parse_patch_nums():
    assert parse_patch_nums("256") == SCHEDULES["256"]
    assert parse_patch_nums("1_2_3_4") == (1, 2, 3, 4)
    assert parse_patch_nums("1,2,3") == (1, 2, 3)
    assert parse_patch_nums([1, 2, 4]) == (1, 2, 4)
    with pytest.raises(ValueError, match="bad scale schedule"):
        parse_patch_nums("1_two_3")


@pytest.mark.parametrize("bad", [(), (1, 1, 2), (2, 1), (0, 1)])
def test_invalid_schedules_are_rejected(bad):
    with pytest.raises(ValueError):
        ScaleSchedule(bad)


def test_split_gives_row_major_maps():
    schedule = ScaleSchedule((1, 2, 3))
    tokens = torch.arange(2 * 14).view(2, 14)
    maps = schedule.split(tokens)
    assert [tuple(m.shape) for m in maps] == [(2, 1, 1), (2, 2, 2), (2, 3, 3)]
    assert maps[2][0].tolist() == [[5, 6, 7], [8, 9, 10], [11, 12, 13]]
    assert torch.equal(torch.cat([m.flatten(1) for m in maps], dim=1), tokens)
    with pytest.raises(ValueError, match="expected 14 tokens"):
        schedule.split(tokens[:, :13])
    assert str(schedule) == "1_2_3"
