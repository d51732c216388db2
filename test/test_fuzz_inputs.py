"""Bad input of every kind found so far: refused with a clear reason, counted, nothing lost.

Core checks run in-process; the nodes are real processes fed by an outside client, and
must stay alive, keep serving their model and say what they refused on /diagnostics.
"""
import math
import shutil
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from packnet_ros.cli import main as cli
from packnet_ros.model.checkpoints import save_checkpoint
from packnet_ros.networks import PackNetSlim01, PoseNet
from packnet_ros.ros.diagnostics_watcher import DiagnosticsWatcher, Level
from packnet_ros.ros.node_process import ClientNode, start_node
from packnet_ros.ros.nodes.conversions import ConversionError, camera_matrix, compressed_to_rgb
from packnet_ros.training import NEIGHBOURS, SpeedTrack, TripletAccumulator

from helpers import DEADLINE, REPO, wait_for_reliable_subscribers

RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)


def png_claiming(width, height):
    """A few hundred bytes of PNG whose header claims a huge image (a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    rows = zlib.compress(b'\x00' * 4096)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', rows) + chunk(b'IEND', b''))


def camera_info(width=1242, height=375, fx=721.5, cx=609.6, fy=721.5, cy=172.9):
    info = CameraInfo(header=Header(frame_id='camera'), width=width, height=height)
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    return info


# ------------------------------------------------------------------------------- core


@pytest.mark.parametrize('speed', [math.inf, math.nan, -1.0, 1e30, 1e6, 340.0, math.hypot(1e200, 1e200)])
def test_absurd_speeds_are_refused(speed):
    track = SpeedTrack(max_speed=70.0)
    assert track.add(1.0, speed) == 'invalid_speed' and not track.samples
    assert track.add(1.0, 12.0) is None


def test_duplicate_stamps_are_ignored_not_time_going_backwards():
    def run(copies):
        acc = TripletAccumulator(16, 32, NEIGHBOURS)
        triplets = []
        for i in range(20):  # every message arrives `copies` times in a row
            t = 1.0 + 0.1 * i
            for stamp in (t, t + 0.05):
                for _ in range(copies):
                    triplets += acc.add_speed(stamp, 8.0)
            for _ in range(copies):
                triplets += acc.add_frame(t, np.full((16, 32, 3), i, np.uint8))
        return triplets, acc.skipped
    once, _ = run(1)
    twice, skipped = run(2)
    assert len(once) == 18 and [t.stamp for t in twice] == [t.stamp for t in once]
    assert skipped['duplicate'] == 3 * 20 and 'time_backwards' not in skipped


@pytest.mark.parametrize('fields,reason', [
    ({'cx': math.nan}, 'non-finite cx=nan'), ({'fx': 1e-300}, 'invalid focal lengths'),
    ({'fx': math.inf}, 'non-finite fx=inf'), ({'width': 0}, 'zero size'),
    # Finite but absurd: every point of the cloud was non-finite and every training step skipped.
    ({'cx': 1e300}, 'principal point cx=1e[+]300'), ({'fx': 1.0, 'cx': -1e39}, 'invalid focal lengths fx=1'),
    ({'cy': -3.0}, 'principal point .*cy=-3 outside'), ({'fy': 1e9}, 'invalid focal lengths.*fy=1e[+]09')])
def test_camera_info_is_checked_field_by_field(fields, reason):
    with pytest.raises(ConversionError, match=reason):
        camera_matrix(camera_info(**fields))


def test_compressed_bomb_is_refused_from_its_header():
    bomb = CompressedImage(format='png', data=png_claiming(20000, 20000))
    assert len(bomb.data) < 1000
    with pytest.raises(ConversionError, match='refused before decoding.*400000000 pixels'):
        compressed_to_rgb(bomb, max_pixels=50_000_000)
    with pytest.raises(ConversionError, match='refused before decoding: image is 8000x7000 = 56000000 pixels'):
        compressed_to_rgb(CompressedImage(format='png', data=png_claiming(8000, 7000)), max_pixels=50_000_000)


def test_cli_reports_a_broken_checkpoint_without_a_traceback(tmp_path, capsys):
    payload = torch.load(save_checkpoint(tmp_path / 'ok.ckpt', PackNetSlim01(width=0.25)), weights_only=True)
    payload['step'] = 'many'
    torch.save(payload, tmp_path / 'typed.ckpt')
    (tmp_path / 'img').mkdir()
    cv2.imwrite(str(tmp_path / 'img' / 'frame.png'), np.zeros((64, 192, 3), np.uint8))
    assert cli(['infer', '--checkpoint', str(tmp_path / 'typed.ckpt'), str(tmp_path / 'img'), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'step' is 'many'" in err and 'Traceback' not in err


# ------------------------------------------------------------------------------- nodes


def bad_checkpoints(tmp, good):
    """name -> a checkpoint that must be refused."""
    payload = torch.load(good, weights_only=True)
    out = {}
    nan = {**payload, 'depth_net': {**payload['depth_net']}}
    nan['depth_net']['pre_calc.conv_base.weight'] = torch.full_like(payload['depth_net']['pre_calc.conv_base.weight'],
                                                                    math.nan)
    torch.save(nan, tmp / 'nan.ckpt')
    out['nan weights'] = tmp / 'nan.ckpt'
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp / 'flipped.ckpt').write_bytes(bytes(data))
    out['flipped bit'] = tmp / 'flipped.ckpt'
    missing = {k: v for k, v in payload.items() if k != 'arch'}
    torch.save(missing, tmp / 'missing.ckpt')
    out['missing key'] = tmp / 'missing.ckpt'
    out['directory'] = tmp
    overflowing = {**payload, 'depth_net': {**payload['depth_net']}}  # finite weights, 100 % NaN depth
    overflowing['depth_net']['pre_calc.conv_base.weight'] = torch.full_like(
        payload['depth_net']['pre_calc.conv_base.weight'], 3e38)
    torch.save(overflowing, tmp / 'overflowing.ckpt')
    out['finite weights, NaN depth'] = tmp / 'overflowing.ckpt'
    torch.save({**payload, 'depth_scale': 1e30}, tmp / 'scaled.ckpt')
    out['absurd depth scale'] = tmp / 'scaled.ckpt'
    return out


@pytest.fixture(scope='module')
def nodes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('fuzz')
    torch.manual_seed(0)
    good = save_checkpoint(tmp / 'good.ckpt', PackNetSlim01(width=0.25), input_size=(64, 192))
    ckpt_dir = tmp / 'ckpts'
    ckpt_dir.mkdir()
    shutil.copy(save_checkpoint(tmp / 'resumable.ckpt', PackNetSlim01(width=0.25), PoseNet(), step=40,
                                input_size=(64, 192)), ckpt_dir / 'step_000000040.ckpt')
    for step, path in zip((50, 60), bad_checkpoints(tmp, good).values()):  # newer, unusable
        shutil.copy(path, ckpt_dir / f'step_{step:09d}.ckpt')
    depth = start_node('depth_node', tmp / 'depth.log', (REPO / 'config' / 'depth.yaml',), {'checkpoint': str(good)})
    compressed = start_node('depth_node', tmp / 'compressed.log', (REPO / 'config' / 'depth.yaml',),
                            {'checkpoint': str(good), 'use_compressed': True}, namespace='/compressed')
    training = start_node('training_node', tmp / 'training.log', (REPO / 'config' / 'training.yaml',),
                          {'checkpoint_dir': str(ckpt_dir), 'width': 192, 'height': 64})
    client = ClientNode('fuzz_client')
    watcher = DiagnosticsWatcher(client.node)
    try:
        client.wait_for(lambda: {'/depth_node', '/compressed/depth_node', '/training_node'} <= watcher.nodes(),
                        DEADLINE, 'all three nodes')
        yield client, watcher, {'depth': depth, 'compressed': compressed, 'training': training}, tmp, good
    finally:
        client.close()
        for proc in (depth, compressed, training):
            proc.stop()
            print(proc.log_tail())


def test_training_node_resumes_from_the_newest_valid_checkpoint(nodes):
    procs = nodes[2]
    log = procs['training'].log.read_text()
    assert 'resumed from' in log and 'step_000000040.ckpt at step 40' in log
    assert log.count('passing over a checkpoint') == 2 and procs['training'].alive()


def test_training_node_refuses_absurd_and_overflowing_speeds(nodes):
    client, watcher, procs, *_ = nodes
    pub = client.node.create_publisher(Odometry, '/odom', RELIABLE)
    wait_for_reliable_subscribers(client, ['/odom'])
    for i, speed in enumerate([1e200, -1e200, 1e30, 1e6, 340.0, math.inf, math.nan]):
        odom = Odometry(header=Header(stamp=Time(sec=100 + i)))
        odom.twist.twist.linear.x = speed
        odom.twist.twist.linear.y = speed  # v.x ** 2 overflowed here before
        pub.publish(odom)
    client.wait_for(lambda: watcher.count('skipped_invalid_speed', '/training_node') >= 7, DEADLINE,
                    'seven refused speeds')
    assert procs['training'].alive()
    client.wait_for(lambda: watcher.latest(node='/training_node').level != Level.OK, DEADLINE,
                    'a non-OK level while speeds are refused')
    assert 'invalid speed' in watcher.latest(node='/training_node').message


def test_depth_node_keeps_its_model_through_bad_checkpoints(nodes):
    client, watcher, procs, tmp, good = nodes
    pub = client.node.create_publisher(String, '/checkpoint', 10)
    client.wait_for(lambda: pub.get_subscription_count() >= 1, DEADLINE, 'checkpoint subscription')
    served = watcher.values('/depth_node')['model']
    assert good.name in served
    pub.publish(String(data=''))  # an empty path: a no-op, not an untrained model
    (tmp / 'bad').mkdir()
    for name, path in bad_checkpoints(tmp / 'bad', good).items():
        failed = watcher.count('failed_reloads', '/depth_node')
        pub.publish(String(data=str(path)))
        client.wait_for(lambda: watcher.count('failed_reloads', '/depth_node') > failed, DEADLINE, f'{name} refused')
    assert watcher.values('/depth_node')['model'] == served and procs['depth'].alive()
    log = procs['depth'].log.read_text()
    assert 'ignoring an empty path' in log and 'Traceback' not in log
    assert 'not finite' in log and 'CRC' in log and "lacks 'arch'" in log and 'not a regular file' in log
    assert 'overflowing.ckpt gives non-finite inverse depth on a probe image' in log and 'depth_scale 1e+30' in log


def test_a_flood_of_announcements_loads_the_newest_without_errors(nodes):
    """50 announcements in 10 s made 45 loader threads die in concurrent ONNX exports and
    served the 47th; the loader now takes the newest announcement each time it is free."""
    client, watcher, procs, tmp, good = nodes
    pub = client.node.create_publisher(String, '/checkpoint', 10)
    client.wait_for(lambda: pub.get_subscription_count() >= 1, DEADLINE, 'checkpoint subscription')
    (tmp / 'flood').mkdir()
    paths = [shutil.copy(good, tmp / 'flood' / f'flood_{i:02d}.ckpt') for i in range(20)]
    before = {k: watcher.count(k, '/depth_node') for k in ('reloads', 'superseded_reloads', 'failed_reloads')}
    for path in paths:  # all at once: every one after the first arrives while another loads
        pub.publish(String(data=str(path)))
    image_pub = client.node.create_publisher(Image, '/image', RELIABLE)
    wait_for_reliable_subscribers(client, ['/image'])

    def served_newest():  # the loaded model is swapped in at the next frame
        image_pub.publish(Image(header=Header(stamp=Time(sec=7), frame_id='camera'), height=64, width=192,
                                encoding='rgb8', step=192 * 3, data=bytes(64 * 192 * 3)))
        time.sleep(0.2)
        return 'flood_19.ckpt' in watcher.values('/depth_node').get('model', '')
    client.wait_for(served_newest, 4 * DEADLINE, 'the newest announcement served')
    counts = {k: watcher.count(k, '/depth_node') - before[k] for k in before}
    # Loaded: the first and the newest, and few between; the others superseded (counted) or
    # replaced in the subscription's queue of 10.
    assert counts['failed_reloads'] == 0 and counts['reloads'] < len(paths) / 2, counts
    log = procs['depth'].log.read_text()
    assert 'Traceback' not in log and 'in_onnx_export' not in log and procs['depth'].alive()


def test_failed_checkpoint_parameter_is_rejected_and_keeps_the_old_value(nodes):
    client, _, _, tmp, good = nodes
    set_service = client.node.create_client(SetParameters, '/depth_node/set_parameters')
    get_service = client.node.create_client(GetParameters, '/depth_node/get_parameters')
    assert set_service.wait_for_service(timeout_sec=DEADLINE) and get_service.wait_for_service(timeout_sec=DEADLINE)
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(tmp / 'nan.ckpt'))
    reply = set_service.call_async(SetParameters.Request(parameters=[Parameter(name='checkpoint', value=value)]))
    result = client.wait_for(lambda: reply.result(), DEADLINE, 'set_parameters reply').results[0]
    assert not result.successful and 'not finite' in result.reason
    current = get_service.call_async(GetParameters.Request(names=['checkpoint']))
    assert client.wait_for(lambda: current.result(), DEADLINE, 'get_parameters').values[0].string_value == str(good)


def test_bad_onnx_files_set_as_the_checkpoint_are_refused_with_the_node_alive(nodes):
    """A NaN-weight .onnx was served (100 % NaN depth, level OK); a broken one killed the node."""
    import onnx
    from onnx import numpy_helper

    from packnet_ros.model.checkpoints import load_networks
    from packnet_ros.serving.export import export_depth

    client, watcher, procs, tmp, good = nodes
    exported = tmp / 'good.onnx'
    export_depth(load_networks(good)[0], exported, 64, 192)
    model = onnx.load(exported)
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), np.nan), init.name))
    onnx.save(model, tmp / 'nan.onnx')
    (tmp / 'half.onnx').write_bytes(exported.read_bytes()[:exported.stat().st_size // 2])
    set_service = client.node.create_client(SetParameters, '/depth_node/set_parameters')
    assert set_service.wait_for_service(timeout_sec=DEADLINE)
    served = watcher.values('/depth_node')['model']
    for name, reason in (('nan.onnx', 'gives non-finite inverse depth'), ('half.onnx', 'half.onnx')):
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(tmp / name))
        reply = set_service.call_async(SetParameters.Request(parameters=[Parameter(name='checkpoint', value=value)]))
        result = client.wait_for(lambda: reply.result(), DEADLINE, f'set_parameters reply for {name}').results[0]
        assert not result.successful and reason in result.reason and '\n' not in result.reason, result.reason
    assert procs['depth'].alive() and watcher.values('/depth_node')['model'] == served
    assert 'Traceback' not in procs['depth'].log.read_text()


def test_bad_camera_info_is_refused_and_raises_the_level(nodes):
    client, watcher, procs, *_ = nodes
    pub = client.node.create_publisher(CameraInfo, '/camera_info', RELIABLE)
    wait_for_reliable_subscribers(client, ['/camera_info'])
    # One at a time: depth_node's queue of 2 may replace a third sent at once while it is busy.
    for bad in (camera_info(cx=math.nan), camera_info(cx=1e300), camera_info(fx=1e-300)):  # 1e300: finite, absurd
        rejected = watcher.count('camera_info_rejected', '/depth_node')
        pub.publish(bad)
        client.wait_for(lambda: watcher.count('camera_info_rejected', '/depth_node') > rejected, DEADLINE,
                        f'camera_info with fx={bad.k[0]}, cx={bad.k[2]} refused')
    client.wait_for(lambda: watcher.latest(node='/depth_node').level != Level.OK, DEADLINE, 'a non-OK level')
    assert 'invalid focal lengths' in watcher.latest(node='/depth_node').message  # the latest error, on /diagnostics
    assert 'non-finite cx=nan' in procs['depth'].log.read_text()  # the log is throttled: the first one


def test_compressed_bomb_is_dropped_and_the_next_frame_served(nodes):
    client, watcher, procs, *_ = nodes
    pub = client.node.create_publisher(CompressedImage, '/compressed/image/compressed', RELIABLE)
    answered = []
    client.node.create_subscription(Image, '/compressed/depth', answered.append, RELIABLE)
    wait_for_reliable_subscribers(client, ['/compressed/image/compressed'])
    pub.publish(CompressedImage(header=Header(stamp=Time(sec=1)), format='png', data=png_claiming(20000, 20000)))
    # The node keeps only the newest frame: the good one follows once the bomb was looked at.
    client.wait_for(lambda: 'refused before decoding' in procs['compressed'].log.read_text(), DEADLINE,
                    'the bomb to be refused')
    ok, png = cv2.imencode('.png', np.zeros((375, 1242, 3), np.uint8))
    pub.publish(CompressedImage(header=Header(stamp=Time(sec=2)), format='png', data=png.tobytes()))
    client.wait_for(lambda: any(m.header.stamp.sec == 2 for m in answered), DEADLINE, 'depth for the good frame')
    assert not any(m.header.stamp.sec == 1 for m in answered) and procs['compressed'].alive()


def test_unstamped_frames_are_refused_with_their_own_reason(nodes):
    """A driver that does not stamp: its frames gave no triplet, counted only as duplicates,
    level OK, and nothing in the log said why training never started."""
    client, watcher, procs, *_ = nodes
    info_pub = client.node.create_publisher(CameraInfo, '/camera_info', RELIABLE)
    image_pub = client.node.create_publisher(Image, '/image', RELIABLE)
    wait_for_reliable_subscribers(client, ['/camera_info', '/image'])
    refused = watcher.count('skipped_unstamped', '/training_node')

    def publish_and_count():  # camera_info with each frame: one that overtakes it counts as before camera_info
        info_pub.publish(camera_info(width=192, height=64, fx=100.0, cx=96.0, fy=100.0, cy=32.0))
        image_pub.publish(Image(header=Header(frame_id='camera'), height=64, width=192, encoding='rgb8',
                                step=192 * 3, data=bytes(64 * 192 * 3)))
        time.sleep(0.1)
        return watcher.count('skipped_unstamped', '/training_node') >= refused + 5
    client.wait_for(publish_and_count, DEADLINE, 'five unstamped frames refused')
    client.wait_for(lambda: 'unstamped image refused' in watcher.latest(node='/training_node').message, DEADLINE,
                    'the reason on /diagnostics')
    assert watcher.latest(node='/training_node').level != Level.OK
    assert 'refusing image messages stamped 0' in procs['training'].log.read_text()
