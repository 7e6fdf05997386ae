"""Picking among candidate allocations on a validation run."""
from effigy.mixedprec.pick import mean_ranks, pick_allocation


def test_pick_allocation_keeps_the_best_mean_rank_that_loses_neither_task_nor_psnr_and_may_keep_uniform():
    row = lambda moved, adherence, psnr, fid: {"max_moved": moved, "adherence": adherence, "psnr_vs_fp": psnr,
                                               "fid_features": fid, "clip_score": None}
    uniform = row(0.0, 0.70, 35.0, 30.0)
    sharper_but_off_prompt = row(0.3, 0.65, 36.5, 25.0)
    aligned_a_hair_blurrier = row(0.1, 0.73, 34.95, 29.0)  # best on task and FID, PSNR within 0.1 dB
    aligned_but_blurry = row(0.2, 0.75, 34.5, 28.0)  # best on two scores, but PSNR 0.5 dB below uniform's
    worse = row(0.05, 0.69, 34.9, 31.0)
    assert pick_allocation([uniform, worse, aligned_a_hair_blurrier, sharper_but_off_prompt, aligned_but_blurry],
                           "adherence") == 2
    assert pick_allocation([uniform, worse, sharper_but_off_prompt, aligned_but_blurry], "adherence") == 0
    assert pick_allocation([uniform, aligned_but_blurry], "adherence", psnr_tolerance=1.0) == 1
    assert pick_allocation([uniform, sharper_but_off_prompt], "adherence", task_tolerance=0.06) == 1
    assert pick_allocation([uniform, dict(uniform, max_moved=0.05)], "adherence") == 0  # a tie keeps uniform


def test_mean_ranks_average_ties_and_read_fid_lower_is_better():
    rows = [{"class_accuracy": 1.0, "fid_features": 80.0, "psnr_vs_fp": 27.0, "adherence": None},
            {"class_accuracy": 1.0, "fid_features": 70.0, "psnr_vs_fp": 26.0, "adherence": None},
            {"class_accuracy": 0.9, "fid_features": 90.0, "psnr_vs_fp": 28.0, "adherence": None}]
    # class accuracy: 1.5, 1.5, 3; FID: 2, 1, 3; PSNR: 2, 3, 1 (adherence, absent, is not ranked)
    assert mean_ranks(rows) == [5.5 / 3, 5.5 / 3, 7 / 3]
