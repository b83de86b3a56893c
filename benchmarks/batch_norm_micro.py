"""Micro-benchmark: Keras-style (moments + normalize) vs fused batch norm + ReLU on a Conv-4 block-1-sized tensor.

    python benchmarks/batch_norm_micro.py

Prints seconds for forward, forward+backward, and a second-order gradient (as in MAML's inner loop).
"""
import time, tensorflow as tf
def bench(f, reps=3):
    f(); t=time.perf_counter()
    for _ in range(reps): f()
    return (time.perf_counter()-t)/reps
x = tf.Variable(tf.random.normal([75,28,28,2048]))
g = tf.Variable(tf.ones([2048])); b = tf.Variable(tf.zeros([2048]))
def unfused(x):
    m, v = tf.nn.moments(x, [0,1,2]); return tf.nn.relu(tf.nn.batch_normalization(x, m, v, b, g, 1e-5))
def fused(x):
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, g, b, epsilon=1e-5, is_training=True); return tf.nn.relu(y)
for name, fn in [("unfused", unfused), ("fused", fused)]:
    @tf.function
    def f(): return fn(x)
    @tf.function
    def fb():
        with tf.GradientTape() as t: l = tf.reduce_sum(fn(x)**2)
        return t.gradient(l, [x, g, b])
    @tf.function
    def fbb():
        with tf.GradientTape() as t2:
            with tf.GradientTape() as t: l = tf.reduce_sum(fn(x)**2)
            gr = t.gradient(l, g); l2 = tf.reduce_sum(gr**2)
        return t2.gradient(l2, [x, g])
    print(name, "fwd", round(bench(f),3), "fwd+bwd", round(bench(fb),3), "2nd", round(bench(fbb),3), flush=True)
