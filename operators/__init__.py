"""Forward operators of imaging as deepinv ``LinearPhysics`` with exact adjoints."""
