"""An outside camera driver, as its own process: publishes rgb8 frames and exits.

    python camera_publisher.py TOPIC WIDTH HEIGHT RELIABILITY SUBSCRIBERS RATE:FRAMES [RATE:FRAMES ...]

Waits until SUBSCRIBERS subscriptions of TOPIC exist with our reliability (nodes at
qos_reliability auto follow us) and are matched, then publishes FRAMES frames at RATE Hz
for each pair; stamps are (pair index, frame index). Reliable frames are drained before exit,
best-effort ones given time to be read.
"""
import sys
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

DEADLINE = 60.0


def main() -> None:
    topic, width, height, reliability, subscribers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        sys.argv[4], int(sys.argv[5])
    schedule = [(float(rate), int(frames)) for rate, frames in (arg.split(':') for arg in sys.argv[6:])]
    policy = ReliabilityPolicy.RELIABLE if reliability == 'reliable' else ReliabilityPolicy.BEST_EFFORT
    rclpy.init()
    node = Node('camera_driver')
    pub = node.create_publisher(Image, topic, QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                                                         reliability=policy))
    deadline, ready_since = time.monotonic() + DEADLINE, None
    while time.monotonic() < deadline:  # the right subscriptions, matched, for a second on end
        infos = node.get_subscriptions_info_by_topic(pub.topic_name)
        ready = len(infos) == subscribers and all(i.qos_profile.reliability == policy for i in infos) \
            and pub.get_subscription_count() == subscribers
        ready_since = (ready_since or time.monotonic()) if ready else None
        if ready_since and time.monotonic() - ready_since >= 1.0:
            break
        time.sleep(0.05)
    else:
        sys.exit(f'no {subscribers} {reliability} subscriptions of {pub.topic_name} within {DEADLINE} s')
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes()
    for index, (rate, frames) in enumerate(schedule):
        start = time.monotonic()
        for i in range(frames):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            pub.publish(Image(header=Header(stamp=Time(sec=index + 1, nanosec=i), frame_id='camera'),
                              height=height, width=width, encoding='rgb8', step=width * 3, data=pixels))
    pub.wait_for_all_acked(Duration(seconds=DEADLINE))
    if policy == ReliabilityPolicy.BEST_EFFORT:
        # Nothing is acknowledged: stay up while readers take the last frames out of our
        # shared-memory segment, which goes away with this process (as a camera driver does).
        time.sleep(3.0)
    node.destroy_node()
    rclpy.shutdown()
    print('published', flush=True)


if __name__ == '__main__':
    main()
