"""What pyvsadm says when it attaches pyvs's program by itself (pyvs.dataplane.attachment.AttachReport)."""

from __future__ import annotations

from pyvs.dataplane.attachment import AttachReport


def test_the_note_names_the_interfaces_and_the_mode() -> None:
    note = AttachReport(attached=["eth0", "eth1"]).message()
    assert note.startswith("pyvs's XDP program attached (generic mode) to eth0, eth1: VIP traffic")
    assert "left alone" not in note


def test_an_interface_with_another_program_is_named_as_left_alone() -> None:
    note = AttachReport(attached=["eth0"], skipped={"eth1": "runs the XDP program fw, not pyvs's"}).message()
    assert note.endswith("; left alone: eth1 (runs the XDP program fw, not pyvs's)")


def test_nothing_to_attach_to_says_that_nothing_forwards_and_how_to_attach() -> None:
    note = AttachReport().message()
    assert "forward nothing yet" in note and "pyvs director attach --dev NIC" in note
