"""Progress lines: the final line is not printed twice."""

import logging

from diffrep.progress import Progress


def test_final_line_only_when_it_says_something_new(caplog):
    progress = Progress("job", 2)
    with caplog.at_level(logging.INFO, logger="diffrep"):
        progress.update(5)
        progress.update(5)
        progress.report()       # the loop's last report
        progress.finish()       # says the same: not logged again
        assert sum("shards 2/2" in r.message for r in caplog.records) == 1
        progress.update(0, {"corrupt_image": 1}, units=0)
        progress.finish()       # a skip came in since: logged
    assert caplog.records[-1].message.endswith("skipped corrupt_image=1")
    assert len(caplog.records) == 2
