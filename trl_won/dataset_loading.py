"""Loading a dataset from a local file, a saved dataset directory, or the Hugging Face Hub."""

import os

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk


_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_dataset_dict(name_or_path: str, config: str | None = None, streaming: bool = False) -> DatasetDict:
    """Load `name_or_path` as a `DatasetDict`.

    Args:
        name_or_path (`str`):
            A `.json`/`.jsonl`/`.parquet`/`.csv` file, a directory written by `save_to_disk`, a directory of such
            files, or a hub dataset id.
        config (`str`, *optional*):
            Dataset configuration name (hub datasets).
        streaming (`bool`, *optional*, defaults to `False`):
            Stream instead of downloading (hub datasets and files).

    Returns:
        [`~datasets.DatasetDict`]: A single file or saved `Dataset` becomes the `"train"` split.
    """
    if os.path.isfile(name_or_path):
        extension = os.path.splitext(name_or_path)[1].lower()
        if extension not in _FILE_BUILDERS:
            raise ValueError(
                f"Cannot read dataset file {name_or_path!r}: expected one of {sorted(_FILE_BUILDERS)}, got "
                f"{extension!r}."
            )
        return load_dataset(_FILE_BUILDERS[extension], data_files={"train": name_or_path}, streaming=streaming)
    if os.path.isdir(name_or_path) and (
        os.path.exists(os.path.join(name_or_path, "dataset_dict.json"))
        or os.path.exists(os.path.join(name_or_path, "state.json"))
    ):
        loaded = load_from_disk(name_or_path)
        return DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded
    return load_dataset(name_or_path, name=config, streaming=streaming)


def load_split(name_or_path: str, split: str, config: str | None = None, argument: str = "--dataset_name"):
    """One split of [`load_dataset_dict`]`(name_or_path)`, with an error naming the split and the ones there are."""
    dataset = load_dataset_dict(name_or_path, config)
    if split not in dataset:
        raise ValueError(f"{argument} {name_or_path!r} has no split {split!r} (it has {list(dataset)}).")
    return dataset[split]
