"""Models larger than one GPU: how GPUs are cut into per-worker groups, how the tensor parallel size
reaches vLLM's engine arguments, and the one-line errors of `workers --tp` and `worker --gpus`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from arcsynth.common.settings import Settings
from arcsynth.workers.backends import engine_config
from arcsynth.workers.cli import worker, workers
from arcsynth.workers.gpu_groups import cuda_visible_devices, gpu_groups, parse_gpus


def test_gpus_are_cut_into_consecutive_groups_of_tp():
    assert gpu_groups([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert gpu_groups([0, 1, 2, 3], 1) == [[0], [1], [2], [3]]
    assert gpu_groups([0, 1, 2, 3], 4) == [[0, 1, 2, 3]]
    assert gpu_groups([6, 7, 2, 3], 2) == [[6, 7], [2, 3]]  # in the order given
    assert [cuda_visible_devices(g) for g in gpu_groups([0, 1, 2, 3], 2)] == ["0,1", "2,3"]


@pytest.mark.parametrize(("gpus", "tp", "message"), [
    ([0, 1, 2, 3], 3, "3 does not divide the 4 GPUs 0,1,2,3"),
    ([0, 1], 4, "4 does not divide the 2 GPUs 0,1"),
    ([0, 1], 0, "at least 1"),
    ([], 1, "no GPUs"),
    ([0, 0], 1, "listed twice"),
])
def test_groups_that_cannot_be_made_are_refused(gpus, tp, message):
    with pytest.raises(ValueError, match=message):
        gpu_groups(gpus, tp)


def test_gpu_lists_are_parsed_strictly():
    assert parse_gpus("0,1,2,3") == [0, 1, 2, 3]
    assert parse_gpus(" 2, 3 ,") == [2, 3]
    for bad in ("", ",", "0,x", "-1", "1.5", "0;1"):
        with pytest.raises(ValueError, match="expected GPU indices like 0,1"):
            parse_gpus(bad)
    with pytest.raises(ValueError, match="GPU 1 is given twice"):
        parse_gpus("1,2,1")


def test_the_tensor_parallel_size_setting_reaches_vllms_engine_arguments(monkeypatch):
    from arcsynth.workers.backends.vllm_engine import engine_args

    assert Settings().tensor_parallel_size == 1
    assert engine_args(engine_config(Settings(), "some/model"), on_gpu=False).tensor_parallel_size == 1
    monkeypatch.setenv("ARCSYNTH_TENSOR_PARALLEL_SIZE", "2")
    config = engine_config(Settings(), "some/model")
    assert config.tensor_parallel_size == 2
    args = engine_args(config, on_gpu=True)
    assert (args.tensor_parallel_size, args.model, args.gpu_memory_utilization, args.max_loras) == (2, "some/model", 0.9, 16)
    monkeypatch.setenv("ARCSYNTH_TENSOR_PARALLEL_SIZE", "0")
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        Settings()


@pytest.mark.parametrize(("command", "args", "message"), [
    (workers, ["inference", "--gpus", "0,1,2,3", "--tp", "3"], "error: option --tp: 3 does not divide the 4 GPUs 0,1,2,3"),
    (workers, ["inference", "--gpus", "0,1,2", "--tp", "2"], "error: option --tp: 2 does not divide the 3 GPUs 0,1,2"),
    (workers, ["inference", "--gpus", "0,x"], "error: option --gpus: expected GPU indices like 0,1, got '0,x'"),
    (workers, ["finetune", "--gpus", "0,1", "--tp", "2"], "error: option --tp: a finetune worker takes one GPU"),
    (worker, ["inference", "--gpus", "0,1", "--gpu", "2"], "error: options --gpu and --gpus: give one of them"),
    (worker, ["inference", "--gpus", "0,0"], "error: option --gpus: GPU 0 is given twice in '0,0'"),
    (worker, ["finetune", "--gpus", "0,1"], "error: option --gpus: a finetune worker takes one GPU"),
])
def test_bad_gpu_options_are_one_line_and_exit_2(command, args, message):
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and result.output.startswith(message)


def test_a_worker_group_that_disagrees_with_the_setting_is_refused(monkeypatch):
    monkeypatch.setenv("ARCSYNTH_TENSOR_PARALLEL_SIZE", "4")
    monkeypatch.setenv("ARCSYNTH_BROKER_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the command binds its group here before it refuses
    result = CliRunner().invoke(worker, ["inference", "--gpus", "0,1"])
    assert result.exit_code == 2
    assert result.output == ("error: option --gpus: 2 GPU(s) (0,1) for one worker, "
                             "but ARCSYNTH_TENSOR_PARALLEL_SIZE is 4\n")
