"""prepare: validate the VOC root and write image-level labels and split lists to data/prepared/."""
import logging

from _common import PREPARED, fail, start

from textwsss.prepare import DataError, validate_root, write_prepared

if __name__ == "__main__":
    params = start("prepare")
    try:
        data = validate_root(params.data.root_path(), [params.data.train_split, params.data.val_split],
                             disjoint=[(params.data.train_split, params.data.val_split)])
    except DataError as err:
        fail("prepare", err)
    write_prepared(PREPARED, data)
    for split, ids in data.splits.items():
        logging.getLogger("prepare").info("%s: %d ids, labels written to %s", split, len(ids), PREPARED)
