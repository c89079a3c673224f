"""Publishing the evidence log's head at the end of a run: a value outside the ledger that a later rewrite of the
chain cannot match, so ``audit verify`` can be held to what was published."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from exstream_push.ledger.evidence import SHARDS
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.tasks.summary import artifact_key


@task(name="publish-evidence-head", cache_policy=NO_CACHE)
def publish_evidence_head(use_case: str) -> str:
    """A markdown artifact keyed ``<use case>-evidence-head`` with the digest over every shard's head; returns it."""
    head = ledger_for(get_settings()).evidence_head()
    create_markdown_artifact(
        key=artifact_key(use_case, "evidence-head"),
        markdown=(
            f"**Evidence head** after this `{use_case}` run: `{head}`\n\n"
            f"SHA-256 over the newest record of each of the evidence log's {SHARDS} chains. "
            "`exstream-push audit verify` checks the chains; a rewrite of them would lead to another head."
        ),
        description=f"{use_case}: evidence head",
    )
    return head
