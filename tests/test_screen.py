"""Reading a TUI's output as a person reads its screen (bridge/screen.py), on raw output the real
Claude Code 2.1.197 wrote (cursor moves instead of spaces and line ends)."""

from __future__ import annotations

from bridge.config import cli_definition
from bridge.screen import Terminal, last_message, screen_text

# Claude Code's answer "First paragraph of the answer.\n\nSecond paragraph:\n\n- item one\n- item two",
# as its Ink renderer drew it on a pty (recorded in a rehearsal)
RAW = ("\x1b[6A\x1b[97m●\x1b[3G\x1b[39mFirst paragraph of\x1b[22Gthe answer.\r\x1b[2B  Second paragraph:\x1b[K"
       "\r\x1b[1B\x1b[K\r\x1b[1B  - item one\x1b[K\r\x1b[2C\x1b[1B- item two\x1b[K\r\n\r\n\r\n"
       "\x1b[37m✻\x1b[3GCrunched\x1b[12Gfor\x1b[16G0s\x1b[39m\r\n")


def test_moves_down_are_new_lines_and_a_move_right_before_one_indents_the_next_line():
    assert screen_text(RAW) == ("● First paragraph of the answer.\n\n Second paragraph:\n\n - item one\n"
                                " - item two\n\n\n✻ Crunched for 0s")


def test_cells_a_redraw_leaves_alone_still_show_what_was_there():
    """Seen in CI: Claude Code skips the cells that already show the right character, so "the a",
    a jump to column 29, then "wer." over an earlier "…ns" (of "tokens") reads "the answer."."""
    before = "\x1b[1;1H" + " " * 26 + "ns\r\n"
    after = "\x1b[1;1H\x1b[97m●\x1b[3G\x1b[39mFirst paragraph of\x1b[22Gthe a\x1b[29Gwer.\r\n"
    assert screen_text(before + after) == "● First paragraph of the answer."
    assert screen_text(after) == "● First paragraph of the a wer."  # alone, the cells are blank


def test_sequences_the_emulator_does_not_know_are_ignored_not_fatal():
    """Gemini CLI 0.61.0 sends xterm's modifyOtherKeys (\x1b[>4;0m) and kitty keyboard queries."""
    raw = "\x1b[>4;0m\x1b[?u\x1b[<u\x1b[>q\x1b[?2026h\x1b[cready\x1b[?2026l\r\n\x1b[1mok\x1b[22m"
    assert screen_text(raw) == "ready\nok"
    assert screen_text("\x1b[38:2:255:0:0mred\x1b[0m") == "red"
    assert screen_text("\x1b[999999999999999999999X\x1b[;;;;;Hstill\x00 here").endswith("still here")


def test_a_sequence_cut_by_a_read_is_read_whole():
    term = Terminal()
    for chunk in ("one\x1b[", "<u two \x1b", "[38:5:1", "mthree\x1b]0;tit", "le\x07 four"):
        term.feed(chunk)
    assert term.text() == "one two three four"


def test_the_last_message_keeps_its_paragraphs_and_stops_at_the_tui_chrome():
    claude = cli_definition("claude")["interactive"]["message"]
    answer = "First paragraph of the answer.\n\nSecond paragraph:\n\n- item one\n- item two"
    assert last_message(screen_text(RAW), claude) == answer
    # printed on /exit, not indented: not part of the message
    assert last_message("● Done.\n\nResume this session with:\nclaude --resume 1234\n", claude) == "Done."
    gemini = cli_definition("gemini")["interactive"]["message"]
    screen = f"✦ {answer.replace(chr(10), chr(10) + ' ')}\n\n⚠ Warning: 256-color support\n\n ? for shortcuts\n"
    assert last_message(screen, gemini) == answer
