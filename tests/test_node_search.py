"""Nodes are found by what users type: the frontend's node search matches names and display names
(fuzzy, every word of the query), so each phrase's words all appear in one display name."""

import pytest

import nodes

PHRASES = ("lip sync", "talking head", "avatar", "dub", "portrait animation")


@pytest.mark.parametrize("phrase", PHRASES)
def test_phrase_finds_a_node(phrase):
    names = [n.lower() for n in nodes.NODE_DISPLAY_NAME_MAPPINGS.values()]
    hits = [n for n in names if all(word in n for word in phrase.split())]
    assert hits, f"no PD-FGC node's display name contains every word of {phrase!r}"


def test_every_node_has_a_display_name_starting_with_the_pack_name():
    assert set(nodes.NODE_DISPLAY_NAME_MAPPINGS) == set(nodes.NODE_CLASS_MAPPINGS)
    assert all(n.startswith("PD-FGC ") for n in nodes.NODE_DISPLAY_NAME_MAPPINGS.values())
