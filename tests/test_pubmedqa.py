"""PubMedQA's judge: verdicts from the options' log-probabilities, calibrated on a dev split, the local model's
logits, and an OpenAI-compatible server with and without logprobs (the word judge as fallback)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rag.eval.metrics import YES_NO_MAYBE, yes_no_maybe_scores
from rag.eval.runners import UNCALIBRATED, Calibration, calibrated, fit_calibration
from rag.settings import Settings
from tests.conftest import cli, needs_local_model, write_jsonl
from tests.fakes import VerdictChatServer, verdict_chat_server


def synthetic_split(size: int, signal: float, seed: int) -> tuple[list[dict[str, float]], list[str]]:
    """Gold labels in PubMedQA's proportions and a judge's log-probabilities that lean to "no" and run three times
    too confident, seeing the gold class only through ``signal`` (before the overconfidence) in unit noise."""
    rng = np.random.default_rng(seed)
    gold = list(rng.choice(YES_NO_MAYBE, size=size, p=[0.55, 0.34, 0.11]))
    rows = []
    for label in gold:
        raw = 3 * (rng.normal(0, 1, 3) + np.array([0.0, 1.5, 0.5]) + signal * (np.array(YES_NO_MAYBE) == label))
        rows.append(dict(zip(YES_NO_MAYBE, (raw - np.logaddexp.reduce(raw)).tolist(), strict=True)))
    return rows, gold


def scores_with(rows: list[dict[str, float]], gold: list[str], calibration: Calibration) -> dict:
    return yes_no_maybe_scores(gold, [calibrated({"prediction": "yes", "logprobs": row}, calibration) for row in rows])


def test_a_calibration_fitted_on_dev_beats_the_raw_judge_and_the_majority_on_test() -> None:
    dev, dev_gold = synthetic_split(500, signal=1.0, seed=1)
    test, test_gold = synthetic_split(500, signal=1.0, seed=2)
    fitted = fit_calibration(dev, dev_gold)
    assert fitted.scale < 0.6 and fitted.biases["yes"] == 0  # the judge's overconfidence is undone
    raw, calibrated_ = scores_with(test, test_gold, UNCALIBRATED), scores_with(test, test_gold, fitted)
    majority = test_gold.count("yes") / len(test_gold)
    assert raw["accuracy"] < majority < calibrated_["accuracy"]  # the lean to "no" sinks the raw verdicts
    assert calibrated_["macro_f1"] > raw["macro_f1"] > 0.237  # 0.237: the majority class's macro-F1 here
    assert raw["predicted"]["no"] > calibrated_["predicted"]["no"] > 0


def test_a_judge_without_signal_is_calibrated_to_the_majority_class() -> None:
    dev, dev_gold = synthetic_split(500, signal=0.0, seed=3)
    test, test_gold = synthetic_split(500, signal=0.0, seed=4)
    fitted = fit_calibration(dev, dev_gold)
    assert fitted.scale < 0.1  # nothing to read in the log-probabilities: the prior decides
    assert scores_with(test, test_gold, fitted)["predicted"]["yes"] >= 0.95 * len(test)
    assert calibrated({"prediction": "maybe", "logprobs": None}, fitted) == "maybe"  # a word verdict stays as written


@pytest.fixture(scope="module")
def local_model():  # type: ignore[no-untyped-def]
    from rag.chat_models import LocalChatModel

    return LocalChatModel(Settings())


@needs_local_model
def test_local_option_logprobs_follow_the_prompt_and_repeat_exactly(local_model) -> None:  # type: ignore[no-untyped-def]
    system = {"role": "system", "content": "Reply with one word: yes, no or maybe."}
    say_yes = [system, {"role": "user", "content": "Is water wet? The answer is yes. Reply: yes."}]
    say_no = [system, {"role": "user", "content": "Is fire cold? The answer is no. Reply with the word no."}]
    yes = local_model.option_logprobs(say_yes, YES_NO_MAYBE)
    no = local_model.option_logprobs(say_no, YES_NO_MAYBE)
    assert set(yes) == set(YES_NO_MAYBE) and all(math.isfinite(v) and v <= 0 for v in (*yes.values(), *no.values()))
    assert yes["yes"] > max(yes["no"], yes["maybe"]) and no["no"] > no["yes"]
    assert math.log(sum(math.exp(v) for v in yes.values())) <= 1e-9  # probabilities of distinct tokens: sum ≤ 1
    assert local_model.option_logprobs(say_yes, YES_NO_MAYBE) == yes  # reset per prompt: the same bits again


def tiny_pubmedqa(folder: Path) -> Path:
    """A PubMedQA-shaped benchmark folder: four test and four dev questions, each with its own abstract."""
    topics = ["aspirin after stroke", "statins in the elderly", "early mobilisation after surgery", "zinc for colds",
              "vitamin D in winter", "music therapy for pain", "fasting before anaesthesia", "screening for glaucoma"]  # fmt: skip
    bench = folder / "pubmedqa"
    bench.mkdir(parents=True)
    records = [{"id": f"{i}", "question": f"Does {topic} improve outcomes?", "answer": YES_NO_MAYBE[i % 3]}
               for i, topic in enumerate(topics)]  # fmt: skip
    write_jsonl(bench / "corpus.jsonl", [
        {"id": r["id"], "title": "", "text": f"We studied {topic} in 200 patients. Outcomes with {topic} were "
         f"compared with usual care over one year."} for r, topic in zip(records, topics, strict=True)
    ])  # fmt: skip
    for split, part in (("", records[:4]), ("_dev", records[4:])):
        write_jsonl(bench / f"queries{split}.jsonl", [{"id": r["id"], "text": r["question"]} for r in part])
        (bench / f"qrels{split}.tsv").write_text("".join(f"{r['id']}\t{r['id']}\t1\n" for r in part))
        write_jsonl(bench / f"qa{split or '_test'}.jsonl", part)
    return folder


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_pubmedqa(tmp_path_factory.mktemp("benchmarks"))


def run_pubmedqa(benchmarks: Path, base_url: str, out: Path) -> dict:
    env = {"RAG_EVAL__BENCHMARKS_DIR": str(benchmarks), "RAG_OPENAI__BASE_URL": base_url,
           "RAG_DATA_DIR": str(benchmarks / "data")}  # fmt: skip
    result = cli("eval", "run", "pubmedqa", "--provider", "openai", "--out", str(out), "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["answers"]["openai"]


def test_a_server_without_logprobs_is_judged_by_its_word_and_the_report_says_so(
    benchmarks: Path, tmp_path: Path
) -> None:
    with verdict_chat_server() as url:
        scored = run_pubmedqa(benchmarks, f"{url}/plain/v1", tmp_path / "report")
    assert scored["judges"] == {"word": 8} and scored["calibration"] is None
    assert scored["predicted"] == {"yes": 4, "no": 0, "maybe": 0}  # the word the server wrote, not its logprobs
    assert scored["notes"] == [f"8 × word judge: the chat server at {url}/plain/v1 returned no logprobs"]
    asked = VerdictChatServer.requests
    assert sum(1 for body in asked if body.get("logprobs")) == 8 and sum(1 for body in asked if body.get("stream")) == 8
    assert "returned no logprobs" in (tmp_path / "report" / "report.md").read_text()


def test_a_server_with_logprobs_is_judged_by_them(benchmarks: Path, tmp_path: Path) -> None:
    with verdict_chat_server() as url:
        scored = run_pubmedqa(benchmarks, f"{url}/logprobs/v1", tmp_path / "report")
    assert scored["judges"] == {"logprobs": 8} and scored["notes"] == []
    assert scored["uncalibrated"]["predicted"] == {"yes": 0, "no": 4, "maybe": 0}  # the listed favourite, not "Yes"
    assert scored["calibration"] is not None and scored["dev"]["questions"] == 4
    asked = VerdictChatServer.requests
    assert len(asked) == 8 and not any(body.get("stream") for body in asked)
    assert all(body["logprobs"] and body["top_logprobs"] == 20 and body["max_tokens"] == 1 for body in asked)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "calibrated on dev" in report and "RAG_LLM__PROVIDER=openai" in report
