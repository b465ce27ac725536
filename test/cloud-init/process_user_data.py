#!/usr/bin/python3
"""Feeds user data through cloud-init's own code and reports what the machine would run.

Usage: process_user_data.py < user-data > report.json

The user data goes the way it goes on a Hetzner server: the Hetzner datasource's base64 decoding,
cloud-init's UserDataProcessor (MIME, gzip, #include, archives), its default part handlers (cloud
config merging, shell scripts, boothooks, jinja) writing into a scratch cloud directory, then the
runcmd module writing its script. Nothing the user data brings is executed: boothooks are recorded
in the order cloud-init would run them instead.

The report (JSON): cloudConfig (the merged user cloud-config), finalModules (the final stage's
module list after user data), boothooks and bootcmd (what runs before the config stage), scripts
(each script of the final stage in the order it would run: per-once, per-boot, per-instance, then
the user scripts, which include runcmd's) and warnings (what cloud-init logged at WARNING or worse).
"""

import json
import logging
import os
import shutil
import sys
import tempfile

try:
    from cloudinit import helpers, stages, util
    from cloudinit.config import cc_runcmd
    from cloudinit.handlers import boot_hook
    from cloudinit.settings import PER_INSTANCE
    from cloudinit.sources import DataSourceNone
    from cloudinit.sources.helpers import hetzner
except ImportError as err:
    sys.stderr.write(
        f"cloud-init is not importable by {sys.executable} ({err}); "
        "install it with: apt-get install -y --no-install-recommends cloud-init\n"
    )
    sys.exit(3)


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class RecordBoothooks:
    """Stands in for cloudinit.subp inside the boothook handler: records, does not execute."""

    ProcessExecutionError = Exception

    def __init__(self):
        self.ran = []

    def subp(self, args, **_kwargs):
        path = args[0]
        with open(path, encoding="utf-8", errors="replace") as f:
            self.ran.append({"name": os.path.basename(path), "content": f.read()})
        return ("", "")


def scripts_in(directory, stage):
    if not os.path.isdir(directory):
        return []
    found = []
    # The order of cloudinit.subp.runparts: sorted names, executables only.
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            with open(path, encoding="utf-8", errors="replace") as f:
                found.append({"stage": stage, "name": name, "content": f.read()})
    return found


def main():
    raw = sys.stdin.buffer.read()
    collect = Collect()
    logging.getLogger().addHandler(collect)
    logging.getLogger().setLevel(logging.DEBUG)
    # cloud-init's own handlers log to the root logger; keep stderr for real failures.
    logging.getLogger().handlers = [collect]

    scratch = tempfile.mkdtemp(prefix="tailfleet-cloud-init-")
    try:
        system_cfg = util.read_conf("/etc/cloud/cloud.cfg")
        system_cfg.setdefault("system_info", {})["paths"] = {
            "cloud_dir": os.path.join(scratch, "cloud"),
            "run_dir": os.path.join(scratch, "run"),
            "templates_dir": "/etc/cloud/templates",
        }
        system_cfg.pop("def_log_file", None)
        system_cfg.pop("syslog_fix_perms", None)

        init = stages.Init(ds_deps=[])
        init._cfg = system_cfg  # the system config, with the scratch directory for paths
        ds = DataSourceNone.DataSourceNone(init.cfg, init.distro, init.paths)
        ds.userdata_raw = hetzner.maybe_b64decode(raw)
        init.datasource = ds
        init._paths = None  # re-made with the datasource, for the instance directory
        util.ensure_dirs(init._initial_subdirs())
        init.instancify()
        init._cfg = system_cfg  # instancify forgets it; re-read, it would point at /var/lib/cloud

        recorder = RecordBoothooks()
        boot_hook.subp = recorder
        init._consume_userdata(PER_INSTANCE)

        paths = init.paths
        user_cfg = util.read_conf(paths.get_ipath_cur("cloud_config")) if os.path.isfile(paths.get_ipath_cur("cloud_config")) else {}
        full_cfg = helpers.ConfigMerger(paths=paths, datasource=ds, base_cfg=system_cfg).cfg

        cloud = init.cloudify()
        if "runcmd" in full_cfg.get("cloud_config_modules", []):
            cc_runcmd.handle("runcmd", full_cfg, cloud, logging.getLogger("runcmd"), [])

        final_modules = [m if isinstance(m, str) else m[0] for m in full_cfg.get("cloud_final_modules", [])]
        scripts = []
        for module in final_modules:
            name = module.replace("_", "-")
            if name in ("scripts-per-once", "scripts-per-boot", "scripts-per-instance"):
                scripts += scripts_in(os.path.join(paths.get_cpath("scripts"), name[len("scripts-"):]), name)
            elif name == "scripts-user":
                scripts += scripts_in(paths.get_ipath_cur("scripts"), name)

        bootcmd = full_cfg.get("bootcmd") if "bootcmd" in [m if isinstance(m, str) else m[0] for m in full_cfg.get("cloud_init_modules", [])] else None
        json.dump(
            {
                "cloudConfig": user_cfg,
                "finalModules": final_modules,
                "boothooks": recorder.ran,
                "bootcmd": bootcmd,
                "scripts": scripts,
                "warnings": collect.messages,
            },
            sys.stdout,
            indent=2,
            default=str,
        )
        sys.stdout.write("\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
