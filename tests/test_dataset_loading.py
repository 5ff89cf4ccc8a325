import pytest
from datasets import DatasetDict

from trl_won.dataset_loading import load_dataset_dict
from trl_won.tiny import toy_ranking_dataset


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "saved_dataset", "saved_dict"])
def test_local_formats_load_as_a_train_split(tmp_path, kind):
    dataset = toy_ranking_dataset(conversational=True)
    path = tmp_path / f"data.{kind}"
    if kind in ("jsonl", "json"):
        dataset.to_json(str(path))
    elif kind == "parquet":
        dataset.to_parquet(str(path))
    elif kind == "saved_dataset":
        dataset.save_to_disk(str(path))
    else:
        DatasetDict({"train": dataset, "test": dataset.select(range(2))}).save_to_disk(str(path))
    loaded = load_dataset_dict(str(path))
    assert loaded["train"].to_list() == dataset.to_list()
    if kind == "saved_dict":
        assert len(loaded["test"]) == 2


def test_unknown_file_type_is_a_clear_error(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"expected one of \['.csv', '.json', '.jsonl', '.parquet'\], got '.txt'"):
        load_dataset_dict(str(path))


def test_missing_split_names_the_splits_there_are(tmp_path):
    from trl_won.dataset_loading import load_split

    path = tmp_path / "data.jsonl"
    toy_ranking_dataset().to_json(str(path))
    assert len(load_split(str(path), "train")) == 8
    with pytest.raises(ValueError, match=r"--dataset_name '.*data.jsonl' has no split 'test' \(it has \['train'\]\)"):
        load_split(str(path), "test")
