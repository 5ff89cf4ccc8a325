"""Loading a dataset from a local file, a saved dataset directory, or the Hugging Face Hub."""

import os

from .errors import UsageError


FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_dataset_dict(name_or_path: str, config: str | None = None, streaming: bool = False):
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

    Raises:
        `FileNotFoundError`: `name_or_path` is plainly local (a data file's extension, or a path starting with `/`,
            `./`, `../` or `~`) and does not exist.
    """
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    name_or_path = os.path.expanduser(name_or_path)
    extension = os.path.splitext(name_or_path)[1].lower()
    if os.path.isfile(name_or_path):
        if extension not in FILE_BUILDERS:
            raise UsageError(
                f"Cannot read dataset file {name_or_path!r}: expected one of {sorted(FILE_BUILDERS)}, got "
                f"{extension!r}."
            )
        return load_dataset(FILE_BUILDERS[extension], data_files={"train": name_or_path}, streaming=streaming)
    if not os.path.exists(name_or_path) and (
        extension in FILE_BUILDERS or name_or_path.startswith(("/", "./", "../"))
    ):
        raise FileNotFoundError(f"Dataset {name_or_path!r}: no such file or directory.")
    if os.path.isdir(name_or_path) and (
        os.path.exists(os.path.join(name_or_path, "dataset_dict.json"))
        or os.path.exists(os.path.join(name_or_path, "state.json"))
    ):
        loaded = load_from_disk(name_or_path)
        return DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded
    return load_dataset(name_or_path, name=config, streaming=streaming)


def select_split(dataset, split: str, source: str, flag: str = "--dataset_train_split"):
    """`dataset[split]`, or a [`~trl_won.errors.UsageError`] naming the split, the ones there are and the flag."""
    if split not in dataset:
        raise UsageError(f"{source} has no split {split!r} (it has {list(dataset)}); set {flag} to one of them.")
    return dataset[split]


def load_split(name_or_path: str, split: str, config: str | None = None, argument: str = "--dataset_name"):
    """One split of [`load_dataset_dict`]`(name_or_path)`, with an error naming the split and the ones there are."""
    return select_split(load_dataset_dict(name_or_path, config), split, f"{argument} {name_or_path!r}")
