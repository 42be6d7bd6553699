# Rules that never run: they claim mistyped targets, so the error names the mistake. Included last: they read
# the other rules' outputs.

import re

# Folders of the results tree that rules other than the per-method ones write (splits/, ...): not method names.
SHARED_RESULT_FOLDERS = sorted(
    {
        first
        for rule in workflow.rules
        for output in rule.output
        if str(output).startswith(f"{R}/")
        for first, sep, _ in [str(output)[len(R) + 1 :].partition("/")]
        if sep and "{" not in first
    }
)


# The method wildcard admits only configured names (common.smk), which keeps rule outputs unambiguous; a target
# under any other name then matches no rule, and Snakemake says only "No rule to produce ...". This rule claims
# exactly those targets (a file in a folder of the results tree that is neither a configured method's nor a
# shared one); its input function fails while the DAG is built, naming the method and the configured ones.
rule unknown_method:
    input:
        unknown_method_error,
    output:
        f"{R}/{{method}}/{{path}}",
    wildcard_constraints:
        method=rf"(?!(?:{'|'.join(map(re.escape, METHODS + SHARED_RESULT_FOLDERS))})/)[^/]+",
        path=".+",
