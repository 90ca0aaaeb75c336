"""Every platform's export through the ingest stage: the same conversations, a bad record and feedback on an
unknown answer in each; the neighbours of a bad record are stored, and a second ingest adds nothing."""

import pytest
import test_importers_langfuse
import test_importers_langsmith
import test_importers_openinference
import test_importers_otel

from unolearn.ingest import ingest


@pytest.mark.parametrize("platform", [test_importers_langfuse, test_importers_langsmith, test_importers_openinference,
                                      test_importers_otel], ids=lambda m: m.__name__.removeprefix("test_importers_"))
def test_ingest_keeps_the_neighbours_of_a_bad_record_and_adds_nothing_twice(ws, tmp_path, platform):
    path = platform.export(tmp_path)
    first = ingest(ws, [path], progress=False)
    assert (first.ingested, first.rejected) == (2, 2)
    again = ingest(ws, [path], progress=False)
    assert (again.ingested, again.duplicates) == (0, 2)
    stored = {log.query: log for log in ws.iter_logs()}
    assert stored["How do I reset my router?"].feedback[-1] == "too short, give steps"
    assert stored["How do I reset my router?"].user == "alice"
