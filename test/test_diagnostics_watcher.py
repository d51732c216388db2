"""DiagnosticsWatcher: /diagnostics as typed statuses, matched by node and by what they report."""
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from packnet_ros.ros.diagnostics_watcher import DiagnosticsWatcher, Level, parse
from packnet_ros.ros.node_process import ClientNode

from helpers import DEADLINE


def status(name: str, level: bytes, **values: str) -> DiagnosticStatus:
    return DiagnosticStatus(name=name, level=level, message=f'{name} says hi',
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])


def test_parse_splits_the_name_and_reads_numbers():
    msg = DiagnosticArray(status=[status('/cam/depth_node: depth', DiagnosticStatus.WARN, received='12',
                                         rate_hz='9.5', model='x.ckpt')])
    (s,) = parse(msg, received=3.0)
    assert (s.node, s.what, s.level, s.received) == ('/cam/depth_node', 'depth', Level.WARN, 3.0)
    assert s.count('received') == 12 and s.number('rate_hz') == 9.5
    assert s.count('model') == 0 and s.count('absent', 7) == 7 and s.number('absent', -1.0) == -1.0


def test_watcher_keeps_what_each_node_published():
    client = ClientNode('diagnostics_watcher_test')
    try:
        watcher = DiagnosticsWatcher(client.node)
        publisher = client.node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        sent = [status('/depth_node: depth', DiagnosticStatus.OK, received='1'),
                status('/compressed/depth_node: depth', DiagnosticStatus.ERROR, received='5'),
                status('/training_node: training', DiagnosticStatus.OK, step='3'),
                status('/depth_node: depth', DiagnosticStatus.OK, received='2')]

        def all_arrived():
            publisher.publish(DiagnosticArray(status=sent))  # again until the subscription has matched
            return len(watcher.history()) >= len(sent)
        client.wait_for(all_arrived, DEADLINE, 'the statuses to arrive')
        assert watcher.nodes() == {'/depth_node', '/compressed/depth_node', '/training_node'}
        assert watcher.count('received', '/depth_node') == 2  # the newest of that node, not of its namesake
        assert watcher.latest(node='/compressed/depth_node').level == Level.ERROR
        assert {s.node for s in watcher.history(node='depth_node')} == {'/depth_node', '/compressed/depth_node'}
        assert watcher.count('step', what='training') == 3 and watcher.values(what='nothing') == {}
        watcher.clear()
        assert watcher.latest() is None and watcher.count('step', what='training') == 0
    finally:
        client.close()
