"""The hostile-input corpus: strings an attacker controls (attempt fields, settings records) chosen
for what they would do to an operator's terminal or shell if printed raw (docs/threat-model.md).

Each entry: name -> the string. `ESCAPED` are the ones holding something `display.printable` must
escape (controls, escape sequences, bidi and invisible characters); `SHELL` are shell metacharacters,
which are printable and must be shown as they are, and quoted in every command printed for pasting.
"""

from __future__ import annotations

#: A real partner's account id (32 hex, like every IBM Cloud account id) and its look-alikes.
PARTNER = "0b1c2d3e4f5a69788796a5b4c3d2e1f0"

#: A forged table row: what a newline in `action` printed before (a Permit from an allowlisted partner).
FORGED_ROW = f"2026-11-27T12:00:00.000Z  a3f1c0d2e4b5968778695a4b3c2d1e0f  Permit    enforced  user  {PARTNER}"

ESCAPED: dict[str, str] = {
    "csi_clear_screen": "x\x1b[2J\x1b[Hcleared",
    "csi_colour": "\x1b[31mred\x1b[0m",
    "c1_csi_clear": "x\x9b2Jc1",
    "osc_title": "\x1b]0;pwned-title\x07t",
    "osc_title_st": "\x1b]2;pwned-title2\x1b\\t2",
    "osc_unterminated": "\x1b]0;swallows the next rows",
    "osc8_link": "\x1b]8;;https://evil.example/\x1b\\click here\x1b]8;;\x1b\\",
    "carriage_return": "iam-victim\rIBMid-ATTACKER",
    "backspaces": "IBMid-VICTIM\b\b\b\b\b\bFORGED",
    "newline_forged_row": "object.read\n" + FORGED_ROW,
    "crlf_forged_row": "object.read\r\n" + FORGED_ROW,
    "vertical_tab_form_feed": "a\x0bb\x0cc",
    "tab": "a\tb",
    "nul_bell_del": "a\x00b\x07c\x7fd",
    "next_line_c1": "a\x85b",
    "line_separator": "a\u2028b\u2029c",
    "bidi_rlo": "IBMid-\u202eAMIJ\u202c-ok",
    "bidi_isolates": "\u2066\u2067\u2068x\u2069",
    "zero_width_lookalike": PARTNER + "\u200b",
    "zero_width_joiner_bom": "\u200d\ufeff\u2060x",
    "hangul_filler": "a\u3164b",
    "variation_selector": "a\ufe0fb",
    "soft_hyphen": "ad\u00admin",
    "nbsp_lookalike_space": "jane\u00a0doe",
    "lone_surrogate_escaped": "a\\ud800b",  # a backslash sequence in the input: stays distinguishable
}

SHELL: dict[str, str] = {
    "command_substitution": "$(touch pwned)",
    "backticks": "`touch pwned`",
    "semicolon": "a;touch pwned",
    "pipe": "a|touch pwned",
    "ampersand_redirect": "a&&touch pwned>x",
    "quotes": "a'b\"c",
    "option_lookalike": "--clear-allow",
}

#: Markup: harmless on a terminal (printable), escaped by HTML output.
MARKUP: dict[str, str] = {
    "script_tag": "<script>alert(1)</script>",
    "attribute_break": "\"><img src=x onerror=alert(1)>",
}

#: Account ids an attacker would want proposed for an allowlist or pasted into a shell: each is invalid
#: (contract §3.2), so the processor dead-letters an attempt carrying one; an eval event holding one
#: (written before the rule, or by another producer) is shown escaped and never proposed.
HOSTILE_IDS: dict[str, str] = {
    "id_command_substitution": "$(touch pwned)",
    "id_backticks": "`touch pwned`",
    "id_semicolon": "a;touch pwned",
    "id_zero_width_partner": PARTNER + "\u200b",
    "id_bidi_partner": "\u202e" + PARTNER[::-1],
    "id_option": "--clear-allow",
    "id_escape": "x\x1b[2J",
}

#: Longer than any column: cut on display width, marked with an ellipsis, never wrapped into a row.
OVERSIZED = {"oversized_wide": "\u5bbd" * 700, "oversized_ascii": "A" * 1000 + "\x1b[2J"}

ALL: dict[str, str] = {**ESCAPED, **SHELL, **MARKUP, **OVERSIZED}
