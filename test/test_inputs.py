"""Input subscriptions: per-topic QoS overrides beside qos_reliability auto, and lost-message accounting."""
import yaml
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from packnet_ros.ros.node_process import ClientNode, start_node
from packnet_ros.ros.nodes.inputs import LOSS_WINDOW, DeliveryMonitor, loss_advice

from helpers import DEADLINE, REPO, parameters


def test_delivery_monitor_counts_losses_over_recent_messages():
    monitor = DeliveryMonitor()
    assert monitor.recent_loss == 0.0
    for _ in range(3):
        monitor.received()
    monitor.lost_in_transport(1)
    assert monitor.lost == 1 and monitor.recent_loss == 0.25
    monitor.lost_in_transport(100)  # a long outage fills the window, the total keeps counting
    assert monitor.lost == 101 and monitor.recent_loss == 1.0 and len(monitor.recent) == LOSS_WINDOW
    for _ in range(LOSS_WINDOW):
        monitor.received()
    assert monitor.recent_loss == 0.0


def test_delivery_monitor_counts_sequence_gaps_of_a_single_publisher():
    monitor = DeliveryMonitor()
    for sequence in (1, 2, 5, 6, 9):  # 3, 4, 7 and 8 never reached us
        monitor.received(sequence, b'camera')
    assert monitor.missed == 4
    monitor.received(12, b'restarted camera')  # another publisher: its count starts here
    monitor.received(13, b'restarted camera')
    assert monitor.missed == 4
    monitor.received(20, None)  # two publishers interleave their numbers: no gap can be told
    monitor.received(22, b'restarted camera')
    monitor.received(None, b'restarted camera')  # a middleware without sequence numbers
    monitor.received(30, b'restarted camera')
    assert monitor.missed == 4 and monitor.lost == 0
    monitor.received(32, b'restarted camera')
    assert monitor.missed == 5


def test_loss_advice_names_the_profile_to_give_the_camera():
    advice = loss_advice('/cam/image_raw')
    assert advice.startswith('/cam/image_raw: ')
    assert f'FASTRTPS_DEFAULT_PROFILES_FILE={REPO / "config" / "fastdds.xml"}' in advice


def test_qos_overrides_beat_the_node_wide_qos(tmp_path):
    """The ROS 2 way to set QoS per topic: an override in the parameters file. Our reliable
    publisher would get a reliable subscription under qos_reliability auto; the override says
    best effort and depth 7 for /image, and camera_info keeps following us."""
    params = yaml.safe_load((REPO / 'config' / 'depth.yaml').read_text())
    params['/**']['ros__parameters']['qos_overrides'] = {
        '/image': {'subscription': {'reliability': 'best_effort', 'depth': 7}}}
    (tmp_path / 'depth.yaml').write_text(yaml.safe_dump(params))
    client = ClientNode('qos_override_test')
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    client.node.create_publisher(Image, '/image', reliable)
    client.node.create_publisher(CameraInfo, '/camera_info', reliable)
    proc = start_node('depth_node', tmp_path / 'depth.log', (tmp_path / 'depth.yaml',), {'device': 'cpu'})
    try:
        def subscription(topic):
            infos = [i for i in client.node.get_subscriptions_info_by_topic(topic) if i.node_name == 'depth_node']
            return infos[0] if infos else None
        image = client.wait_for(lambda: subscription('/image'), DEADLINE, 'depth_node on /image')
        info = client.wait_for(lambda: subscription('/camera_info'), DEADLINE, 'depth_node on /camera_info')
        assert image.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        # discovery does not carry the queue depth: the node's own view of it
        depths = parameters(client, '/depth_node', ['qos_overrides./image.subscription.depth',
                                                    'qos_overrides./camera_info.subscription.depth'], DEADLINE)
        assert list(depths.values()) == [7, 2]
    finally:
        proc.stop()
        client.close()
    assert proc.popen.returncode == 0
