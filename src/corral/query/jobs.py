"""The fields of node groups and jobs.

Layer: master core (queries).
"""

from __future__ import annotations

from corral import objects, opcodes
from corral.config.writer import ConfigWriter
from corral.query.base import (
    QFT_BOOL,
    QFT_NUMBER,
    QFT_OTHER,
    QFT_TEXT,
    QFT_TIMESTAMP,
    Field,
    _nicesort_key,
)

# --- groups and jobs ----------------------------------------------------------------------


def _group_fields() -> dict[str, Field]:
    def nodes_of(c: ConfigWriter, g: objects.NodeGroup) -> list[str]:
        return sorted(
            (n.name for n in c.data.nodes.values() if n.group == g.uuid), key=_nicesort_key
        )

    f = [
        Field("name", "Group", QFT_TEXT, "Group name", lambda c, g: g.name),
        Field("uuid", "UUID", QFT_TEXT, "Group UUID", lambda c, g: g.uuid),
        Field(
            "alloc_policy",
            "AllocPolicy",
            QFT_TEXT,
            "Allocation policy",
            lambda c, g: g.alloc_policy,
        ),
        Field("node_cnt", "Nodes", QFT_NUMBER, "Number of nodes", lambda c, g: len(nodes_of(c, g))),
        Field("node_list", "NodeList", QFT_OTHER, "Nodes", nodes_of),
        Field("tags", "Tags", QFT_OTHER, "Tags", lambda c, g: list(g.tags)),
        Field("serial_no", "SerialNo", QFT_NUMBER, "Serial number", lambda c, g: g.serial_no),
        Field("ctime", "CTime", QFT_TIMESTAMP, "Creation time", lambda c, g: g.ctime),
        Field("mtime", "MTime", QFT_TIMESTAMP, "Modification time", lambda c, g: g.mtime),
    ]
    return {x.name: x for x in f}


def _job_fields() -> dict[str, Field]:
    f = [
        Field("id", "ID", QFT_NUMBER, "Job ID", lambda c, j: j.id),
        Field("status", "Status", QFT_TEXT, "Job status", lambda c, j: j.status.value),
        Field("priority", "Prio", QFT_NUMBER, "Current priority", lambda c, j: j.priority),
        Field("summary", "Summary", QFT_OTHER, "Opcode summaries", lambda c, j: j.summary),
        Field(
            "ops",
            "OpCodes",
            QFT_OTHER,
            "Opcodes",
            lambda c, j: [opcodes.to_obj(o.input) for o in j.ops],
        ),
        Field(
            "opstatus",
            "OpCode_status",
            QFT_OTHER,
            "Opcode statuses",
            lambda c, j: [o.status.value for o in j.ops],
        ),
        Field(
            "opresult",
            "OpCode_result",
            QFT_OTHER,
            "Opcode results",
            lambda c, j: [o.result for o in j.ops],
        ),
        Field("oplog", "OpCode_log", QFT_OTHER, "Opcode logs", lambda c, j: [o.log for o in j.ops]),
        Field(
            "opstart",
            "OpCode_start",
            QFT_OTHER,
            "Opcode start times",
            lambda c, j: [o.start_ts for o in j.ops],
        ),
        Field(
            "opexec",
            "OpCode_exec",
            QFT_OTHER,
            "Opcode execution times",
            lambda c, j: [o.exec_ts for o in j.ops],
        ),
        Field(
            "opend",
            "OpCode_end",
            QFT_OTHER,
            "Opcode end times",
            lambda c, j: [o.end_ts for o in j.ops],
        ),
        Field(
            "oppriority",
            "OpCode_prio",
            QFT_OTHER,
            "Opcode priorities",
            lambda c, j: [o.priority for o in j.ops],
        ),
        Field("received_ts", "Received", QFT_TIMESTAMP, "Received", lambda c, j: j.received_ts),
        Field("start_ts", "Start", QFT_TIMESTAMP, "Started", lambda c, j: j.start_ts),
        Field("end_ts", "End", QFT_TIMESTAMP, "Ended", lambda c, j: j.end_ts),
        Field("archived", "Archived", QFT_BOOL, "Archived", lambda c, j: j.archived),
    ]
    return {x.name: x for x in f}
