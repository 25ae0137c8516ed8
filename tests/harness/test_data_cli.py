"""`algoperf data`: tool lookup by registered name, usage and errors (exit 2, one line)."""

from algoperf import cli, data_cli


def test_lists_tools_and_exits_2_without_a_workload(capsys):
    assert cli.main(['data']) == 2
    out = capsys.readouterr().out
    assert 'usage: algoperf data' in out and 'ogbg' in out and 'workloads.ogbg.convert:main' in out
    assert cli.main(['data', '--help']) == 0


def test_variants_share_their_base_workloads_tool(capsys):
    assert data_cli.tools()['ogbg'] == 'workloads.ogbg.convert:main'
    assert cli.main(['data', 'ogbg_gelu', '--raw_dir=/nonexistent', '--data_dir=/tmp/x']) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith('algoperf data ogbg_gelu: error: --raw_dir=/nonexistent')
        and err.count('\n') == 1
    )


def test_unknown_workload_and_workload_without_a_tool(capsys):
    assert cli.main(['data', 'no_such_workload']) == 2
    assert 'no_such_workload' in capsys.readouterr().err
    assert cli.main(['data', 'mnist']) == 2
    err = capsys.readouterr().err
    assert "'mnist' has no data tool" in err and 'ogbg' in err


def test_a_dataset_name_shared_by_workloads_with_one_tool(capsys):
    tools = data_cli.tools()
    assert tools['librispeech_conformer'] == tools['librispeech_deepspeech']
    assert cli.main(['data', 'librispeech', '--raw_dir=/nonexistent', '--data_dir=/tmp/x']) == 2
    assert '/nonexistent' in capsys.readouterr().err
    assert cli.main(['data', 'imagenet']) == 2  # imagenet_* have no tool: no alias.
