"""The operator tools (settings, tail, report, simulate): what they do, without their argparse."""
